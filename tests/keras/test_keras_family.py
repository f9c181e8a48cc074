"""Keras channel-attention family (SE, SE-Var1/2/3, SE-GC, ECA-NS) against the float64 reference.

Forward and gradients, 16-bit dtypes, the empty batch, errors, init, canonical weights, configs,
``.keras`` files, and ECA-ResNets built with every kind (parameter counts: the paper's formulas).

Runs on this process's Keras backend; test_keras_other_backends.py reruns the folder under the
other two. The ResNet-50 model test covers every kind on tensorflow only; jax and torch build a
ResNet-18 with a few kinds (eager ResNet-50 gradients are slow there, and the builder is shared).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from common import BAD_INPUTS, run_family_example

from eca_multi import archs, reference
from eca_multi.conformance.generate import round_to_dtype
from eca_multi.conformance.tolerances import compare, describe_failure
from eca_multi.family import NAMES, attention_config, attention_schema, init_bounds
from eca_multi.keras import (
    ECA,
    ECANS,
    SE,
    SEGC,
    SEVar1,
    SEVar2,
    SEVar3,
    export_canonical,
    from_config,
    load_canonical,
    make_attention,
)
from eca_multi.keras._conformance import dtype_name, to_numpy, vjp_params
from eca_multi.keras.family import attention_variables
from eca_multi.keras.io import (
    export_canonical_model,
    load_canonical_model,
    load_weights_file,
    save_weights_file,
)
from eca_multi.keras.models import create_model
from eca_multi.weights import WeightMismatchError
from eca_multi.weights.layouts import to_canonical, to_native

BACKEND = keras.backend.backend()
CF, CL = "channels_first", "channels_last"
KINDS = ("eca_ns", "se", "se_var1", "se_var2", "se_var3", "se_gc")
CLASSES = {"eca_ns": ECANS, "se": SE, "se_var1": SEVar1, "se_var2": SEVar2, "se_var3": SEVar3}
CLASSES["se_gc"] = SEGC


def kind_kwargs(kind: str, channels: int, circular: bool = False) -> dict:
    """Each kind's own arguments for ``channels`` (8 or 16 here)."""
    if kind == "se":
        return dict(rd_channels=channels // 4)
    if kind == "se_gc":
        return dict(groups=4)
    if kind == "eca_ns":
        return dict(kernel_size=5, padding="circular" if circular else "zeros")
    return {}


def tensor(x64: np.ndarray, dtype: str):
    return keras.ops.cast(keras.ops.convert_to_tensor(x64.astype(np.float32)), dtype)


def random_params(layer, seed: int) -> dict[str, np.ndarray]:
    """Canonical weights in [-1, 1] (float32-exact) for every name of the kind's schema."""
    rng = np.random.default_rng(seed)
    return {
        n: round_to_dtype(rng.uniform(-1, 1, size=shape), "float32")
        for n, (shape, _) in attention_schema(layer.config).items()
    }


def run(layer, x64, g64, dtype) -> dict:
    """y, dx and the canonical gradient of every weight (eager VJP), as float64 NumPy."""
    table = {id(v): (n, lay) for n, (v, lay) in attention_variables(layer).items()}  # builds
    y, dx, dws = vjp_params(layer, tensor(x64, dtype), tensor(g64, dtype))
    dparams = {}
    for var, dw in zip(layer.trainable_variables, dws, strict=True):
        name, layout = table[id(var)]
        dparams[name] = to_canonical(to_numpy(dw), layout)
    return dict(
        y=to_numpy(y), dx=to_numpy(dx), dparams=dparams, dtypes=(dtype_name(y), dtype_name(dx))
    )


def assert_close(kind: str, case: str, got: dict, x64, g64, params, dtype, **kw) -> None:
    """y, dx and every weight gradient against the float64 reference, under the tolerance table."""
    want_y = reference.attention_forward(x64, params, kind, **kw)
    want_dx, want_dp = reference.attention_backward(x64, params, g64, kind, **kw)
    pairs = [("y", got["y"], want_y, "forward"), ("dx", got["dx"], want_dx, "grad")]
    assert set(got["dparams"]) == set(want_dp), f"keras-{BACKEND}/{kind}/{case}: gradient names"
    pairs += [(f"d[{n}]", got["dparams"][n], want_dp[n], "grad") for n in want_dp]
    failures = []
    for name, a, b, what in pairs:
        res = compare(a, b, dtype, what)
        if not res["ok"]:
            failures.append(describe_failure(f"keras-{BACKEND}", f"{kind}/{case}", name, res))
    assert not failures, "\n".join(failures)
    assert got["dtypes"] == (dtype, dtype), f"{kind}/{case}: output dtypes {got['dtypes']}"


# (id, input shape, data_format, gate, dtype): 1-D / 2-D / 3-D, both formats, both gates, 16-bit
SITUATIONS = [
    ("cf_2d", (2, 16, 5, 4), CF, "sigmoid", "float32"),
    ("cl_1d_hard", (3, 7, 16), CL, "hard_sigmoid", "float32"),
    ("cf_3d", (2, 16, 2, 3, 2), CF, "sigmoid", "float32"),
    ("cl_2d_bf16", (2, 3, 4, 16), CL, "sigmoid", "bfloat16"),
    ("cf_1d_fp16_hard", (2, 16, 6), CF, "hard_sigmoid", "float16"),
]


@pytest.mark.parametrize("situation", SITUATIONS, ids=[s[0] for s in SITUATIONS])
@pytest.mark.parametrize("kind", KINDS)
def test_forward_and_gradients_match_reference(kind, situation):
    case, shape, df, gate, dtype = situation
    kw = kind_kwargs(kind, 16, circular="1d" in case)
    layer = make_attention(kind, 16, gate=gate, data_format=df, **kw)
    params = random_params(layer, seed=len(case))
    load_canonical(layer, params)
    rng = np.random.default_rng(1)
    x = round_to_dtype(rng.standard_normal(shape) * 3, dtype)
    g = round_to_dtype(rng.standard_normal(shape), dtype)
    got = run(layer, x, g, dtype)
    ref_kw = dict(gate=gate, data_format=df)
    if kind == "eca_ns":
        ref_kw["padding"] = kw["padding"]
    assert_close(kind, case, got, x, g, params, dtype, **ref_kw)


@pytest.mark.parametrize("kind", KINDS)
def test_empty_batch_gives_empty_output_and_zero_gradients(kind):
    layer = make_attention(kind, 8, data_format=CL, **kind_kwargs(kind, 8))
    x = np.zeros((0, 3, 3, 8))
    got = run(layer, x, x, "float32")
    assert got["y"].shape == (0, 3, 3, 8) and got["dx"].shape == (0, 3, 3, 8)
    for name, d in got["dparams"].items():
        assert not np.any(d), f"keras-{BACKEND}/{kind}: gradient of {name} on N=0 is {d}"


@pytest.mark.parametrize("kind", KINDS)
def test_mixed_bfloat16_policy_keeps_float32_weights(kind):
    layer = make_attention(kind, 8, data_format=CF, dtype="mixed_bfloat16", **kind_kwargs(kind, 8))
    x = np.random.default_rng(0).standard_normal((2, 8, 3)).astype(np.float32)
    y = layer(keras.ops.cast(x, "bfloat16"))
    assert dtype_name(y) == "bfloat16", f"{kind}: output dtype {dtype_name(y)}"
    assert all(dtype_name(v) == "float32" for v in layer.weights), [v.dtype for v in layer.weights]
    want = reference.attention_forward(round_to_dtype(x, "bfloat16"), export_canonical(layer), kind)
    res = compare(to_numpy(y), want, "bfloat16", "forward")
    assert res["ok"], describe_failure(f"keras-{BACKEND}", kind, "y (mixed_bfloat16)", res)


@pytest.mark.parametrize("mode", ["eager", "symbolic"])
@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_raises_shared_error(kind, bad, mode):
    _, kwargs, shape, dtype, exc, match = bad
    layer = make_attention(kind, data_format=CF, **kwargs, **kind_kwargs(kind, kwargs["channels"]))
    x = np.zeros(shape, dtype) if mode == "eager" else keras.Input(shape[1:], dtype=dtype)
    with pytest.raises(exc, match=f"keras {NAMES[kind]} .*{match}"):
        layer(x)


BAD_CONSTRUCTOR = [
    ("se_gc", dict(channels=10, groups=4), ValueError, r"channels \(10\) must be divisible"),
    ("se_gc", dict(channels=8), ValueError, "needs groups"),
    ("se", dict(channels=8, groups=2), ValueError, "'se' takes no groups"),
    ("se_var3", dict(channels=8, kernel_size=3), ValueError, "'se_var3' takes no kernel_size"),
    ("se_var2", dict(channels=8, padding="circular"), ValueError, "takes no padding"),
    ("eca_ns", dict(channels=8, kernel_size=4), ValueError, "odd"),
    ("se", dict(channels=8, reduction=0), ValueError, "reduction must be >= 1"),
    ("se", dict(channels=8, rd_channels=2.0), TypeError, "rd_channels must be an int"),
    ("se_var1", dict(channels=0), ValueError, "channels must be >= 1"),
    ("se_var2", dict(channels=8, gate="relu"), ValueError, "gate must be one of"),
    ("se_var3", dict(channels=8, data_format="NCHW"), ValueError, "data_format must be"),
    ("cbam", dict(channels=8), ValueError, "attention must be one of"),
]


@pytest.mark.parametrize("kind, kwargs, exc, match", BAD_CONSTRUCTOR)
def test_bad_arguments_raise_shared_errors(kind, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        make_attention(kind, **kwargs)
    if kind in CLASSES and kind != "se" and "kernel_size" not in kwargs:  # same from the class
        if "padding" not in kwargs:
            with pytest.raises(exc, match=match):
                CLASSES[kind](**kwargs)


@pytest.mark.parametrize("kind", KINDS)
def test_init_follows_init_bounds(kind):
    keras.utils.set_random_seed(0)
    layer = make_attention(kind, 64, **kind_kwargs(kind, 64))
    bounds = init_bounds(layer.config)
    state = export_canonical(layer)
    assert set(state) == set(bounds)
    for name, w in state.items():
        b = bounds[name]
        assert np.abs(w).max() <= b, f"{kind}/{name}: max |w| {np.abs(w).max():.3g} > bound {b:.3g}"
        if w.size >= 16:  # U(-b, b): the spread reaches well beyond b / 2
            assert np.abs(w).max() > 0.5 * b, f"{kind}/{name}: max |w| {np.abs(w).max():.3g}"
            assert np.unique(w).size > w.size // 2, f"{kind}/{name}: repeated init values"


NATIVE = {  # Keras variable name -> native shape for C = 16
    "se": {"fc1_kernel": (1, 1, 16, 4), "fc1_bias": (4,), "fc2_kernel": (1, 1, 4, 16),
           "fc2_bias": (16,)},
    "se_var1": {},
    "se_var2": {"kernel": (16,)},
    "se_var3": {"fc_kernel": (16, 16)},
    "se_gc": {"fc_kernel": (16, 4)},
    "eca_ns": {"kernel": (16, 5)},
}  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_canonical_round_trip_and_native_layouts(kind):
    a = make_attention(kind, 16, data_format=CL, **kind_kwargs(kind, 16))
    b = make_attention(kind, 16, data_format=CL, **kind_kwargs(kind, 16))
    native = {v.path.split("/")[-1]: tuple(v.shape) for v in (a.build(None) or a.weights)}
    assert native == NATIVE[kind], f"{kind}: native variables {native}"
    params = random_params(a, seed=3)
    load_canonical(a, params)
    state = export_canonical(a)
    assert list(state) == list(attention_schema(a.config)), f"{kind}: canonical names / order"
    for name, (shape, layout) in attention_schema(a.config).items():
        assert state[name].dtype == np.float32 and state[name].shape == shape, name
        np.testing.assert_array_equal(state[name], params[name], err_msg=f"{kind}/{name}")
        var = attention_variables(a)[name][0]
        np.testing.assert_array_equal(to_numpy(var), to_native(params[name], layout), err_msg=name)
    load_canonical(b, state)
    x = np.random.default_rng(0).standard_normal((2, 3, 16)).astype(np.float32)
    np.testing.assert_array_equal(to_numpy(a(x)), to_numpy(b(x)), err_msg=f"{kind}: reloaded")


@pytest.mark.parametrize("kind", KINDS)
def test_weight_mismatch_lists_every_bad_key(kind):
    layer = make_attention(kind, 16, **kind_kwargs(kind, 16))
    state = export_canonical(layer)
    keys = list(state)
    bad = {**state, "extra.weight": np.zeros(3, np.float32)}
    if keys:
        bad[keys[0]] = np.zeros((*state[keys[0]].shape, 2), np.float32)
    if len(keys) > 1:
        del bad[keys[-1]]
    with pytest.raises(WeightMismatchError) as e:
        load_canonical(layer, bad)
    assert e.value.unexpected == ["extra.weight"], str(e.value)
    assert sorted(e.value.mismatched) == keys[:1], str(e.value)
    assert e.value.missing == keys[1:][-1:], str(e.value)
    assert f"Keras {NAMES[kind]}(channels=16" in str(e.value)
    if len(keys) > 1:  # strict=False tolerates missing / unexpected keys, never a wrong shape
        load_canonical(layer, {k: state[k] for k in keys[1:]}, strict=False)


@pytest.mark.parametrize("kind", KINDS)
def test_repr_config_and_from_config(kind):
    kw = kind_kwargs(kind, 16)
    layer = make_attention(kind, 16, gate="hard_sigmoid", data_format=CF, name="att", **kw)
    cfg = attention_config(kind, 16, gate="hard_sigmoid", data_format=CF, **kw)
    assert repr(layer) == cfg.describe(), repr(layer)
    assert layer.config == cfg and layer.name == "att"
    config = layer.get_config()
    assert {k: config[k] for k in cfg.constructor_args()} == cfg.constructor_args(), config
    again = type(layer).from_config(config)
    assert again.config == cfg and again.name == "att"
    assert keras.layers.deserialize(keras.layers.serialize(layer)).config == cfg
    assert from_config(cfg, name="x").config == cfg
    assert isinstance(from_config(attention_config("eca", 16)), ECA)


def test_default_data_format_is_keras_image_data_format():
    layer = SE(32)
    assert layer.config.data_format == keras.config.image_data_format()
    assert SE(32).get_config()["data_format"] == keras.config.image_data_format()


def test_keras_file_round_trip_of_every_kind(tmp_path):
    keras.utils.set_random_seed(1)
    inp = keras.Input((16, 3, 4))
    x = inp
    for kind in (*KINDS, "eca"):
        x = make_attention(kind, 16, data_format=CF, name=kind, **kind_kwargs(kind, 16))(x)
    model = keras.Model(inp, x)
    path = tmp_path / "family.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for kind in (*KINDS, "eca"):
        a, b = model.get_layer(kind), loaded.get_layer(kind)
        assert type(a) is type(b) and a.config == b.config, kind
        for n, w in export_canonical(a).items():
            np.testing.assert_array_equal(export_canonical(b)[n], w, err_msg=f"{kind}/{n}")
    xs = np.random.default_rng(0).standard_normal((2, 16, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(to_numpy(model(xs)), to_numpy(loaded(xs)))


# ---------------------------------------------------------------------------------------------
# models: one argument picks the attention of every block

if BACKEND == "tensorflow":
    MODEL, MODEL_KINDS = "eca_resnet50", ("eca", "eca_ns", "se", "se_var1", "se_var2", "se_var3",
                                         "se_gc", None)  # fmt: skip
else:  # eager ResNet-50 gradients are slow on jax / torch CPU; the builder is the same code
    MODEL, MODEL_KINDS = "eca_resnet18", ("se_gc", None)
# NOTE: eager JAX differentiates a ResNet op by op (measured ~55 s of dispatch warm-up on a shared
# 2-core CPU): on jax the model test runs the forward only; the layers' gradients are tested above
MODEL_GRADS = BACKEND != "jax"
_PLAIN: dict[str, int] = {}


def _plain_params() -> int:
    if MODEL not in _PLAIN:
        _PLAIN[MODEL] = create_model(MODEL, 10, data_format=CF, attention=None).count_params()
    return _PLAIN[MODEL]


ROUND_TRIP = ("se", "eca_ns")  # export -> load through the model schema (reads r / k back)


@pytest.mark.parametrize("kind", MODEL_KINDS, ids=str)
def test_resnet_with_each_attention_runs_and_counts_params(kind):
    model = create_model(MODEL, 10, data_format=CF, attention=kind)
    extra = model.count_params() - _plain_params()
    want = archs.attention_params(MODEL, kind)
    assert extra == want, (
        f"keras-{BACKEND} {MODEL} attention={kind}: +{extra} params, formula {want}"
    )
    if kind in ROUND_TRIP:
        state = export_canonical_model(model)
        assert list(state) == list(archs.schema(MODEL, 10, None, kind)), f"{kind}: canonical keys"
        load_canonical_model(model, state)  # the schema check passes the attention through
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    if not MODEL_GRADS:
        y = to_numpy(model(x))
        assert y.shape == (1, 10) and np.isfinite(y).all(), f"{kind}: logits {y}"
        return
    g = np.ones((1, 10), np.float32)
    y, dx, dws = vjp_params(model, keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(g))
    assert tuple(y.shape) == (1, 10) and np.isfinite(to_numpy(y)).all(), kind
    assert np.isfinite(to_numpy(dx)).all() and np.abs(to_numpy(dx)).max() > 0, kind
    blocks = archs.resnet_blocks(archs.get_arch(MODEL), None, kind)
    n_att = sum(len(attention_schema(c)) for b in blocks if (c := b.attention_config()))
    att_grads = []
    for v, d in zip(model.trainable_variables, dws, strict=True):
        d = to_numpy(d)
        assert np.isfinite(d).all(), f"{kind}: non-finite gradient of {v.path}"
        if "-eca/" in v.path:  # the attention layers keep ECA's name
            att_grads.append(np.abs(d).max())
    assert len(att_grads) == n_att, f"{kind}: {len(att_grads)} attention weights, want {n_att}"
    if att_grads:  # the attention weights receive gradient
        assert max(att_grads) > 0, f"{kind}: zero attention gradients"


def test_model_mismatched_attention_is_a_weight_mismatch():
    se = create_model("eca_resnet18", 10, data_format=CL, attention="se")
    eca_state = export_canonical_model(create_model("eca_resnet18", 10, data_format=CL))
    with pytest.raises(WeightMismatchError) as e:
        load_canonical_model(se, eca_state)
    assert "layer1.0.eca.fc1.weight" in e.value.missing
    assert "layer1.0.eca.conv.weight" in e.value.unexpected
    assert "attention 'se'" in str(e.value)


def test_model_files_keep_the_attention(tmp_path):
    kw = dict(groups=8, gate="hard_sigmoid")
    model = create_model("eca_resnet18", 10, data_format=CL, attention="se_gc", attention_kwargs=kw)
    x = np.random.default_rng(0).standard_normal((1, 32, 32, 3)).astype(np.float32)
    want = to_numpy(model(x))
    save_weights_file(model, tmp_path / "m.keras")
    save_weights_file(model, tmp_path / "m.weights.h5")
    loaded = load_weights_file(tmp_path / "m.keras", "eca_resnet18")
    np.testing.assert_array_equal(to_numpy(loaded(x)), want)
    moved = load_weights_file(tmp_path / "m.keras", "eca_resnet18", data_format=CF)  # rebuilt
    layer = moved.get_layer("layer1-0-eca")
    assert isinstance(layer, SEGC) and (layer.config.groups, layer.config.gate) == (
        8,
        "hard_sigmoid",
    )
    got = to_numpy(moved(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
    res = compare(got, want.astype(np.float64), "float32", "forward")
    assert res["ok"], describe_failure(f"keras-{BACKEND}", "se_gc resnet18 CL->CF", "logits", res)
    h5 = load_weights_file(tmp_path / "m.weights.h5", "eca_resnet18", attention="se_gc",
                           attention_kwargs=kw)  # fmt: skip
    np.testing.assert_array_equal(to_numpy(h5(x)), want)
    with pytest.raises(ValueError, match="does not fit a Keras eca_resnet18"):
        load_weights_file(tmp_path / "m.weights.h5", "eca_resnet18", attention="se")


if BACKEND == "tensorflow":  # collected on the default backend only: it builds nine ResNet-50s

    def test_timm_seresnet50t_logits_match():
        """Oracle: timm's SE-ResNet-50-T (SEModule, timm's width rule) ported through the canonical
        format into our ``ecaresnet50t`` with ``attention="se", rd_divisor=8``; eval logits agree
        within the zoo's 1e-4 (channels_last, 64x64)."""
        import timm
        import torch

        from eca_multi.torch import io as torch_io
        from eca_multi.torch import models as torch_models

        torch.manual_seed(0)
        theirs = timm.create_model("seresnet50t", pretrained=False, num_classes=10)
        theirs = torch_models.randomize_batchnorm_(theirs, name="ecaresnet50t", image_size=64)
        state = torch_io.export_canonical_model(theirs)
        ours = create_model(
            "ecaresnet50t", 10, data_format=CL, attention="se", attention_kwargs={"rd_divisor": 8}
        )
        load_canonical_model(ours, state)  # strict: timm's keys and shapes are our schema
        x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
        with torch.no_grad():
            want = theirs.eval()(torch.from_numpy(x)).numpy().astype(np.float64)
        got = to_numpy(ours(np.ascontiguousarray(x.transpose(0, 2, 3, 1))))
        d = float(np.abs(got - want).max())
        print(f"\nvs timm seresnet50t: max_abs {d:.2e}, max|logit| {np.abs(want).max():.2f}")
        assert d <= 1e-4, f"keras ecaresnet50t+SE vs timm seresnet50t: max_abs {d:.2e} > 1e-4"

    def test_family_example_runs(capsys):
        """examples/keras_family_example.py (its asserts check every kind's parameter count)."""
        out = run_family_example("keras_family_example.py", capsys)
        timm_se = archs.schema("ecaresnet50t", 10, None, "se", {"rd_divisor": 8})
        assert f"layer1.0.se.fc1.weight {timm_se['layer1.0.se.fc1.weight'][0]}" in out, out[-999:]
