"""Flax channel-attention family (NNX and Linen) against the float64 reference: forward and
gradients of every member in both data formats, 1-D / 2-D / 3-D and a 16-bit dtype; errors;
init; canonical export / load; repr; and ECA-ResNet50 with every attention (forward, backward,
parameter count = plain ResNet-50 + the kind's formula summed over blocks)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from common import BAD_INPUTS, OFFICIAL_PARAMS
from flax import nnx

from eca_multi import archs, reference
from eca_multi.conformance.generate import round_to_dtype
from eca_multi.conformance.tolerances import compare, describe_failure
from eca_multi.family import (
    ATTENTIONS,
    attention_config,
    attention_schema,
    init_bounds,
    param_count,
)
from eca_multi.flax import (
    ECA,
    ECANS,
    SE,
    SEGC,
    SEVar1,
    SEVar2,
    SEVar3,
    export_canonical,
    linen,
    load_canonical,
    make_attention,
)
from eca_multi.flax.io import load_canonical_model
from eca_multi.flax.models import abstract_model
from eca_multi.weights import WeightMismatchError

KINDS = tuple(k for k in ATTENTIONS if k != "eca")
C = 16
# the kind's own arguments (C = 16): SE r = 4 -> 4 hidden units, SE-GC 4 groups, ECA-NS k = 5
EXTRA = {"se": dict(reduction=4), "se_gc": dict(groups=4), "eca_ns": dict(kernel_size=5)}
LOW = {"se_var3": "float16", "se_var1": "float16"}  # the rest run their 16-bit case in bfloat16
# (id, input shape, data_format, gate, dtype, extra kwargs)
SITUATIONS = {
    "cf_2d": ((2, C, 5, 4), "channels_first", "sigmoid", "float32", {}),
    "cl_1d_hard": ((3, 7, C), "channels_last", "hard_sigmoid", "float32", {"padding": "circular"}),
    "cl_3d_16bit": ((2, 3, 2, 4, C), "channels_last", "sigmoid", None, {}),
}
# which API runs which situation (each jitted run is one small compile)
RUNS = [
    (s, api)
    for s, apis in (
        ("cf_2d", ("nnx", "nnx-jit", "linen")),
        ("cl_1d_hard", ("nnx-jit",)),
        ("cl_3d_16bit", ("nnx-jit",)),
    )
    for api in apis
]


def _kwargs(kind: str, situation: str) -> tuple[dict, str, tuple[int, ...]]:
    shape, data_format, gate, dtype, extra = SITUATIONS[situation]
    kw = dict(EXTRA.get(kind, {}), gate=gate, data_format=data_format)
    if kind == "eca_ns":
        kw.update(extra)
    return kw, dtype or LOW.get(kind, "bfloat16"), shape


def _state(kind: str, kw: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Random canonical float32 weights (biases too): U(-2b, 2b), b the init bound, as the
    conformance goldens (z is O(1), the regime the tolerance table is calibrated for)."""
    cfg = attention_config(kind, C, **kw)
    rng, bounds = np.random.default_rng(seed), init_bounds(cfg)
    return {
        n: rng.uniform(-2 * bounds[n], 2 * bounds[n], shape).astype(np.float32)
        for n, (shape, _) in attention_schema(cfg).items()
    }


def _vjp(layer: nnx.Module, x: jax.Array, g: jax.Array):
    graphdef, params = nnx.split(layer)
    y, pullback = jax.vjp(lambda p, x: nnx.merge(graphdef, p)(x), params, x)
    dparams, dx = pullback(g)
    return y, dx, dparams


_VJP_JIT = nnx.jit(_vjp)


def _run(api: str, kind: str, kw: dict, state: dict, x: jax.Array, g: jax.Array):
    """(y, dx, {canonical name: gradient}) through one API."""
    if api == "linen":
        module = linen.make_attention(kind, C, **kw)
        variables = linen.load_canonical(module, None, state)
        y, pullback = jax.vjp(jax.jit(module.apply), variables, x)
        dvars, dx = jax.jit(pullback)(g)
        return y, dx, linen.export_canonical(module, dvars)
    layer = make_attention(kind, C, **kw, rngs=nnx.Rngs(1))
    load_canonical(layer, state)
    y, dx, dstate = (_VJP_JIT if api == "nnx-jit" else _vjp)(layer, x, g)
    return y, dx, export_canonical(nnx.merge(nnx.graphdef(layer), dstate))


@pytest.mark.parametrize("situation,api", RUNS, ids=[f"{s}-{a}" for s, a in RUNS])
@pytest.mark.parametrize("kind", KINDS)
def test_forward_backward_match_reference(kind, situation, api):
    kw, dtype, shape = _kwargs(kind, situation)
    state = _state(kind, kw)
    rng = np.random.default_rng(3)
    x64 = round_to_dtype(rng.standard_normal(shape), dtype)
    g64 = round_to_dtype(rng.standard_normal(shape), dtype)
    y, dx, grads = _run(api, kind, kw, state, jnp.asarray(x64, dtype), jnp.asarray(g64, dtype))
    assert (y.dtype.name, dx.dtype.name) == (dtype, dtype), f"{kind} {api}: {y.dtype}, {dx.dtype}"
    ref_y = reference.attention_forward(x64, state, kind, **kw)
    ref_dx, ref_dp = reference.attention_backward(x64, state, g64, kind, **kw)
    assert sorted(grads) == sorted(ref_dp), f"{kind}: gradients of {sorted(grads)}"
    pairs = [("y", y, ref_y, "forward"), ("dx", dx, ref_dx, "grad")]
    pairs += [(f"d[{n}]", grads[n], ref_dp[n], "grad") for n in ref_dp]
    failures = []
    for name, got, want, check in pairs:
        res = compare(np.asarray(got, np.float64), want, dtype, check)
        if not res["ok"]:
            failures.append(describe_failure(f"flax-{api}", f"{kind} {situation}", name, res))
    assert not failures, "\n".join(failures)


def test_nnx_jit_and_linen_equal_eager_bit_for_bit():
    """One code path: eager NNX, nnx.jit and Linen forwards give the same bits (float32)."""
    x = jnp.asarray(np.random.default_rng(5).standard_normal((2, 3, 4, C)), jnp.float32)
    for kind in KINDS:
        kw = dict(EXTRA.get(kind, {}))
        layer = make_attention(kind, C, **kw, rngs=nnx.Rngs(0))
        module = linen.make_attention(kind, C, **kw)
        variables = linen.load_canonical(module, None, export_canonical(layer))
        eager = np.asarray(layer(x))
        jitted = np.asarray(nnx.jit(lambda m, x: m(x))(layer, x))
        lin = np.asarray(jax.jit(module.apply)(variables, x))
        assert np.array_equal(eager, jitted), f"{kind}: nnx.jit differs from eager"
        assert np.array_equal(eager, lin), f"{kind}: Linen differs from NNX"


# ---------------------------------------------------------------- construction


def test_classes_defaults_repr_and_native_params():
    rngs = nnx.Rngs(0)
    se = SE(64, rngs=rngs)
    assert repr(se) == "flax.nnx.SE(channels=64, rd_channels=4, data_format='channels_last')"
    assert se.fc1.kernel[...].shape == (1, 1, 64, 4) and se.fc2.bias[...].shape == (64,)
    assert SE(64, rd_divisor=8, rngs=rngs).config.rd_channels == 8  # timm's width
    assert SEVar3(8, rngs=rngs).fc.kernel[...].shape == (8, 8)
    assert SEVar2(8, rngs=rngs).kernel[...].shape == (8,)
    assert SEGC(8, 2, rngs=rngs).fc.kernel[...].shape == (8, 4)
    ns = ECANS(64, rngs=rngs)
    assert ns.kernel[...].shape == (64, 3), "ECA-NS takes k from ECA's rule (k = 3 at C = 64)"
    assert repr(SEVar1(8, gate="hard_sigmoid", data_format="channels_first")) == (
        "flax.nnx.SEVar1(channels=8, gate='hard_sigmoid', data_format='channels_first')"
    )
    want = "flax.linen.SEGC(channels=8, groups=2, data_format='channels_last')"
    assert repr(linen.SEGC(8, 2)) == want
    assert isinstance(make_attention("eca", 64, rngs=rngs), ECA)
    assert isinstance(linen.make_attention("eca", 64), linen.ECA)
    for kind in KINDS:  # parameter count = the paper's formula; float32 params by default
        layer = make_attention(kind, C, **EXTRA.get(kind, {}), rngs=rngs)
        leaves = jax.tree.leaves(nnx.state(layer, nnx.Param))
        assert sum(v.size for v in leaves) == param_count(layer.config), kind
        assert all(v.dtype == jnp.float32 for v in leaves), kind
    bf = SE(C, reduction=4, param_dtype=jnp.bfloat16, rngs=rngs)
    assert all(v.dtype == jnp.bfloat16 for v in jax.tree.leaves(nnx.state(bf, nnx.Param)))


def test_init_is_uniform_with_init_bounds():
    for kind in ("se", "se_var2", "se_var3", "se_gc", "eca_ns"):
        draws: dict[str, list] = {}
        for seed in range(10):
            layer = make_attention(kind, C, **EXTRA.get(kind, {}), rngs=nnx.Rngs(seed))
            state = export_canonical(layer)
            for n, v in state.items():
                draws.setdefault(n, []).append(v.ravel())
        for n, b in init_bounds(layer.config).items():
            w = np.concatenate(draws[n])
            assert np.abs(w).max() <= b, f"{kind} {n}: init exceeds 1/sqrt(fan_in)={b:.3f}"
            near = np.abs(w).max() > 0.9 * b and abs(w.mean()) < 0.2 * b  # >= 160 draws
            assert near, f"{kind} {n}: not U(-b, b) (max {np.abs(w).max():.3f}, b {b:.3f})"


BAD = [
    ("se_gc_no_groups", "se_gc", {}, ValueError, "needs groups"),
    ("se_gc_indivisible", "se_gc", dict(groups=5), ValueError, "divisible by groups"),
    ("se_zero_reduction", "se", dict(reduction=0), ValueError, "reduction must be >= 1"),
    ("se_float_rd", "se", dict(rd_channels=2.0), TypeError, "rd_channels must be an int"),
    ("eca_ns_even_k", "eca_ns", dict(kernel_size=4), ValueError, "odd"),
    ("bad_gate", "se_var2", dict(gate="relu"), ValueError, "gate must be one of"),
    ("bad_data_format", "se_var3", dict(data_format="NCHW"), ValueError, "data_format must be"),
    ("foreign_arg", "se", dict(groups=4), ValueError, "takes no groups"),
    ("unknown_kind", "cbam", {}, ValueError, "attention must be one of"),
]


@pytest.mark.parametrize("kind,kw,exc,match", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
@pytest.mark.parametrize("api", ["nnx", "linen"])
def test_bad_constructor(api, kind, kw, exc, match):
    with pytest.raises(exc, match=match):
        if api == "nnx":
            make_attention(kind, 64, **kw, rngs=nnx.Rngs(0))
        else:
            linen.make_attention(kind, 64, **kw)


def test_bad_constructor_direct_classes():
    with pytest.raises(ValueError, match="channels must be >= 1"):
        SEVar3(0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="needs groups"):
        SEGC(64, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="divisible"):
        linen.SEGC(64, groups=7)


@pytest.mark.parametrize(
    "kwargs,shape,dtype,exc,match", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
@pytest.mark.parametrize("mode", ["nnx", "nnx-jit", "linen"])
def test_bad_inputs(mode, kwargs, shape, dtype, exc, match):
    """The shared input errors, naming the class (e.g. "flax SE expects ..."), for every kind."""
    x = jnp.zeros(shape, dtype)
    for kind in KINDS:
        kw = dict(EXTRA.get(kind, {}), **kwargs)
        kw["data_format"] = "channels_first"  # BAD_INPUTS shapes are channels_first
        channels = kw.pop("channels")
        with pytest.raises(exc, match=match) as info:
            if mode == "linen":
                module = linen.make_attention(kind, channels, **kw)
                module.init(jax.random.key(0), x)
            else:
                layer = make_attention(kind, channels, **kw, rngs=nnx.Rngs(0))
                nnx.jit(lambda m, x: m(x))(layer, x) if mode == "nnx-jit" else layer(x)
        name = layer.config.name if mode != "linen" else module.config.name
        assert f"flax {name}" in str(info.value), f"{kind}: {info.value}"


def test_empty_batch():
    for kind in KINDS:
        layer = make_attention(kind, 8, **EXTRA.get(kind, {}), rngs=nnx.Rngs(0))
        for x in (jnp.zeros((0, 3, 8)), jnp.zeros((0, 3, 3, 8), jnp.bfloat16)):
            y = layer(x)
            assert y.shape == x.shape and y.dtype == x.dtype, f"{kind}: {y.shape} {y.dtype}"


# ---------------------------------------------------------------- canonical weights


@pytest.mark.parametrize("kind", KINDS)
def test_canonical_round_trip_and_mismatch(kind):
    kw = EXTRA.get(kind, {})
    src = make_attention(kind, C, **kw, rngs=nnx.Rngs(0))
    dst = make_attention(kind, C, **kw, rngs=nnx.Rngs(1))
    state = export_canonical(src)
    cfg = src.config
    assert {n: v.shape for n, v in state.items()} == {
        n: s for n, (s, _) in attention_schema(cfg).items()
    }, f"{kind}: exported names / shapes differ from the canonical schema"
    load_canonical(dst, state)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, C)), jnp.float32)
    assert np.array_equal(np.asarray(dst(x)), np.asarray(src(x))), f"{kind}: round trip"
    assert all(np.array_equal(v, export_canonical(dst)[n]) for n, v in state.items())
    # Linen: load, export, and the same numbers
    module = linen.make_attention(kind, C, **kw)
    variables = linen.load_canonical(module, None, state)
    assert set(variables["params"]) == set(nnx.to_pure_dict(nnx.state(src, nnx.Param)))
    out = linen.export_canonical(module, variables)
    assert all(np.array_equal(out[n], v) for n, v in state.items()), f"{kind}: linen round trip"
    if not state:  # SE-Var1: only an unexpected key can be wrong
        with pytest.raises(WeightMismatchError, match="unexpected.*weight"):
            load_canonical(dst, {"weight": np.zeros(C, np.float32)})
        return
    first, *rest = state
    bad = {n: v for n, v in state.items() if n != first}  # one missing
    if rest:  # and one mis-shaped
        bad[rest[0]] = np.zeros((3,) + state[rest[0]].shape, np.float32)
    bad["extra.weight"] = np.zeros(1, np.float32)  # and one unexpected
    for loader in (
        lambda s: load_canonical(dst, s),
        lambda s: linen.load_canonical(module, variables, s),
    ):
        with pytest.raises(WeightMismatchError) as info:
            loader(bad)
        msg = str(info.value)
        assert first in msg and "extra.weight" in msg and (not rest or rest[0] in msg), msg
    load_canonical(dst, {n: v for n, v in state.items() if n != first}, strict=False)


# ---------------------------------------------------------------- ECA-ResNet50 with each kind


def _random_state(schema: archs.Schema, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded canonical weights for a model schema: convs N(0, 1/fan_in), unit BatchNorms,
    attention and classifier weights U(-0.2, 0.2)."""
    rng, out = np.random.default_rng(seed), {}
    bns = {k[: -len(".running_var")] for k in schema if k.endswith(".running_var")}
    for key, (shape, _) in schema.items():
        owner, leaf = key.rsplit(".", 1)
        if leaf == "num_batches_tracked":
            out[key] = np.array(0, np.int64)
        elif owner in bns:
            one = leaf in ("weight", "running_var")
            out[key] = (np.ones if one else np.zeros)(shape, np.float32)
        elif len(shape) == 4 and ".eca." not in key:
            std = np.sqrt(1.0 / np.prod(shape[1:]))
            out[key] = (rng.standard_normal(shape) * std).astype(np.float32)
        else:
            out[key] = rng.uniform(-0.2, 0.2, shape).astype(np.float32)
    return out


_PLAIN: dict[str, int] = {}


def _params(model: nnx.Module) -> int:
    return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize("kind", (None, *ATTENTIONS))
def test_eca_resnet50_forward_backward_and_param_count(kind):
    """ECA-ResNet50 with each attention runs forward and backward (2 x 64 x 64 x 3, 10 classes,
    eager); its parameter count minus the plain ResNet-50's (attention=None, whose own count is
    the published ECA-ResNet50's minus ECA's 80 weights) is the kind's formula over blocks."""
    name = "eca_resnet50"
    plain = _PLAIN.setdefault(name, _params(abstract_model(name, 10, attention=None)))
    # the plain ResNet-50 (1000 classes) is the published ECA-ResNet50 count minus its 80 kernel
    # weights; here with a 10-class head
    head_delta = (1000 - 10) * (2048 + 1)
    assert plain == OFFICIAL_PARAMS[name] - archs.attention_params(name, "eca") - head_delta
    model = abstract_model(name, 10, attention=kind)
    assert _params(model) - plain == archs.attention_params(name, kind), (
        f"{kind}: {_params(model) - plain} attention parameters, formula "
        f"{archs.attention_params(name, kind)}"
    )
    if kind is None:  # the plain network: only its count is needed (the baseline above)
        return
    load_canonical_model(model, _random_state(archs.schema(name, 10, None, kind)))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 64, 64, 3)), jnp.float32)
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean(m(x) ** 2))(model)
    assert np.isfinite(float(loss)) and float(loss) > 0, f"{kind}: loss {loss}"
    flat = {
        "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): np.asarray(v)
        for path, v in jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(grads))[0]
    }
    attn = {p: v for p, v in flat.items() if "/eca/" in p}
    n_attn = sum(a.size for a in attn.values())
    assert n_attn == archs.attention_params(name, kind), f"{kind}: {n_attn} attention grads"
    assert all(np.isfinite(a).all() for a in attn.values()), f"{kind}: non-finite gradient"
    if n_attn:
        assert any(np.abs(a).max() > 0 for a in attn.values()), f"{kind}: all-zero gradients"
    stem = flat["conv1/kernel"]
    assert np.isfinite(stem).all() and np.abs(stem).max() > 0, f"{kind}: stem gradient"


@pytest.mark.parametrize(
    "name,kind,kwargs",
    [
        ("ecaresnet26t", "se", {"rd_divisor": 8}),  # timm block: attribute "se" (timm's width)
        ("eca_mobilenet_v2", "se_gc", {"groups": 8}),
        ("eca_resnet18", None, None),
    ],
)
def test_models_canonical_keys_and_msgpack_round_trip(name, kind, kwargs, tmp_path):
    """The model's canonical export is exactly archs.schema(..., attention) (key order and
    shapes), strict loading round-trips it, and our msgpack export records the attention."""
    from eca_multi.flax.io import export_canonical_model, load_weights_file, save_weights_file

    schema = archs.schema(name, 10, None, kind, kwargs)
    model = abstract_model(name, 10, attention=kind, attention_kwargs=kwargs)
    expected = archs.attention_params(name, kind, kwargs)
    plain = _params(abstract_model(name, 10, attention=None))
    assert _params(model) - plain == expected, f"{name} {kind}: attention parameter count"
    state = _random_state(schema, seed=1)
    load_canonical_model(model, state)
    out = export_canonical_model(model)
    assert list(out) == list(schema), f"{name} {kind}: export keys differ from the schema"
    assert all(np.array_equal(out[k], state[k]) for k in schema), f"{name} {kind}: round trip"
    if kind == "se":
        assert "layer1.0.se.fc1.weight" in out and "layer1.0.se.fc2.bias" in out
    path = save_weights_file(model, tmp_path / "m.msgpack")
    loaded = load_weights_file(path, name, kernel_sizes="checkpoint")
    assert (loaded.attention, loaded.attention_kwargs) == (kind, kwargs or {})
    again = export_canonical_model(loaded)
    assert all(np.array_equal(again[k], state[k]) for k in schema), f"{name} {kind}: msgpack"
