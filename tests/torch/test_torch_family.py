"""The torch channel-attention family (SE, SE-Var1/2/3, SE-GC, ECA-NS): numbers against the float64
reference (forward and backward, float32 and 16-bit, both data formats, 1-D to 3-D), errors,
canonical weights, timm's SEModule as an oracle, and ECA-ResNet-50 built with every attention."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_backend

torch = require_backend("torch")
from common import BAD_INPUTS  # noqa: E402

from eca_multi import archs, reference  # noqa: E402
from eca_multi.conformance.generate import round_to_dtype  # noqa: E402
from eca_multi.conformance.tolerances import compare, describe_failure  # noqa: E402
from eca_multi.family import (  # noqa: E402
    ATTENTIONS,
    attention_config,
    attention_schema,
    init_bounds,
    param_count,
    se_reduced_channels,
)
from eca_multi.torch import (  # noqa: E402
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
from eca_multi.torch import io as IO  # noqa: E402
from eca_multi.torch import models as M  # noqa: E402
from eca_multi.torch._ops import scale_add  # noqa: E402
from eca_multi.weights import WeightMismatchError, load_file, save_file  # noqa: E402

FAMILY = tuple(k for k in ATTENTIONS if k != "eca")  # the new members
_TORCH = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CF, CL = "channels_first", "channels_last"

# per-kind arguments for C = 12 (SE: 12 // 4 = 3 hidden units; SE-GC: 3 groups of 4)
KW12 = {"se": dict(reduction=4), "se_gc": dict(groups=3), "eca_ns": dict(kernel_size=5)}
# (id, input shape, data_format, gate, dtype, extra kwargs)
SITUATIONS = [
    ("cf_2d", (2, 12, 5, 4), CF, "sigmoid", "float32", {}),
    ("cl_1d_hard", (3, 7, 12), CL, "hard_sigmoid", "float32", {}),
    ("cf_3d", (2, 12, 3, 2, 4), CF, "sigmoid", "float32", {}),
    ("cl_3d_bf16", (2, 3, 2, 4, 12), CL, "sigmoid", "bfloat16", {}),
    ("cf_2d_fp16_hard", (2, 12, 3, 5), CF, "hard_sigmoid", "float16", {}),
]


def _build(kind: str, channels: int = 12, **kw) -> torch.nn.Module:
    torch.manual_seed(sum(map(ord, kind)))
    return make_attention(kind, channels, **{**KW12.get(kind, {}), **kw})


def _params(layer) -> dict[str, torch.Tensor]:
    return {n: layer.get_parameter(n) for n in attention_schema(layer.config)}


def _run(layer, x: np.ndarray, g: np.ndarray, dtype: str) -> dict[str, np.ndarray]:
    """Forward and VJP on float64 arrays cast to ``dtype``: float64 y, dx and d[name]."""
    xt = torch.as_tensor(x).to(_TORCH[dtype]).requires_grad_(True)
    params = _params(layer)
    y = layer(xt)
    assert y.dtype == xt.dtype, f"{layer!r}: output dtype {y.dtype} for input {xt.dtype}"
    grads = torch.autograd.grad(y, (xt, *params.values()), torch.as_tensor(g).to(y.dtype))
    as64 = lambda t: t.detach().to(torch.float64).numpy()  # noqa: E731
    out = {"y": as64(y), "dx": as64(grads[0])}
    out.update({f"d[{n}]": as64(d) for n, d in zip(params, grads[1:], strict=True)})
    return out


def _reference(layer, x: np.ndarray, g: np.ndarray) -> dict[str, np.ndarray]:
    params = {n: v.detach().double().numpy() for n, v in _params(layer).items()}
    kw = layer.config.constructor_args()
    y = reference.attention_forward(x, params, layer.config.kind, **kw)
    dx, dp = reference.attention_backward(x, params, g, layer.config.kind, **kw)
    return {"y": y, "dx": dx, **{f"d[{n}]": d for n, d in dp.items()}}


def _assert_close(where: str, got: dict, ref: dict, dtype: str) -> None:
    assert set(got) == set(ref), f"{where}: tensors {sorted(got)} vs reference {sorted(ref)}"
    failures = []
    for name in ref:
        res = compare(got[name], ref[name], dtype, "forward" if name == "y" else "grad")
        if not res["ok"]:
            failures.append(describe_failure("torch", where, name, res))
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    "sid,shape,df,gate,dtype,extra", SITUATIONS, ids=[s[0] for s in SITUATIONS]
)
@pytest.mark.parametrize("kind", FAMILY)
def test_matches_reference(kind, sid, shape, df, gate, dtype, extra):
    layer = _build(kind, gate=gate, data_format=df, **extra)
    rng = np.random.default_rng(len(sid) * 31 + len(kind))
    x = round_to_dtype(rng.standard_normal(shape) * 2, dtype)
    g = round_to_dtype(rng.standard_normal(shape), dtype)
    _assert_close(f"{layer!r} {sid}", _run(layer, x, g, dtype), _reference(layer, x, g), dtype)


@pytest.mark.parametrize("k", [3, 15], ids=["k3", "k15_gt_C"])
def test_eca_ns_circular_matches_reference(k):
    """Circular padding wraps modulo C, also for k > C (as ECA's CECA padding)."""
    layer = _build("eca_ns", kernel_size=k, padding="circular", data_format=CL)
    rng = np.random.default_rng(k)
    x, g = rng.standard_normal((2, 3, 4, 12)), rng.standard_normal((2, 3, 4, 12))
    _assert_close(f"{layer!r}", _run(layer, x, g, "float32"), _reference(layer, x, g), "float32")


@pytest.mark.parametrize("kind", FAMILY)
def test_float64_module_computes_in_float64(kind):
    """Weights and input in float64: the whole path runs in float64 (reference to 1e-12)."""
    layer = _build(kind).double()
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((2, 12, 3, 3)), rng.standard_normal((2, 12, 3, 3))
    xt = torch.as_tensor(x).requires_grad_(True)
    y = layer(xt)
    (dx,) = torch.autograd.grad(y, xt, torch.as_tensor(g))
    ref = _reference(layer, x, g)
    assert y.dtype == dx.dtype == torch.float64, (y.dtype, dx.dtype)
    for name, got in (("y", y), ("dx", dx)):
        err = float(np.abs(got.detach().numpy() - ref[name]).max())
        assert err < 1e-12, f"{layer!r} float64 {name}: max abs error {err:.2e} (want < 1e-12)"


@pytest.mark.parametrize("kind", FAMILY)
def test_autocast_does_not_lower_the_attention_path(kind):
    """Under CPU autocast (bfloat16) the pooled vector, mixing and gate stay float32: the output
    for a float32 input is bit-identical to the one without autocast."""
    layer = _build(kind)
    x = torch.randn(2, 12, 4, 4)
    want = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = layer(x)
    assert got.dtype == torch.float32 and torch.equal(got, want), (
        f"{layer!r} under autocast: dtype {got.dtype}, max diff {(got - want).abs().max():.2e}"
    )


@pytest.mark.parametrize("kind", FAMILY)
def test_empty_batch(kind):
    layer = _build(kind, data_format=CL)
    x = torch.zeros(0, 3, 12, dtype=torch.bfloat16, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape and y.dtype == x.dtype, f"{layer!r}: {y.shape} {y.dtype}"
    (dx,) = torch.autograd.grad(y.sum(), x)
    assert dx.shape == x.shape


# ---------------------------------------------------------------------------------------------
# errors: the shared messages, naming the class


@pytest.mark.parametrize(
    "name,kwargs,shape,dtype,exc,match", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
@pytest.mark.parametrize("kind", FAMILY)
def test_bad_input(kind, name, kwargs, shape, dtype, exc, match):
    kw = {"se_gc": dict(groups=2)}.get(kind, {})
    layer = make_attention(kind, **kwargs, **kw)
    x = torch.zeros(shape, dtype=getattr(torch, dtype))
    with pytest.raises(exc, match=match) as info:
        layer(x)
    assert f"torch {layer.config.name} " in str(info.value), str(info.value)


BAD_CONSTRUCTOR = [
    ("se_gc_indivisible", "se_gc", dict(channels=10, groups=4), ValueError, "divisible by groups"),
    ("se_gc_no_groups", "se_gc", dict(channels=8), ValueError, "needs groups"),
    ("se_groups", "se", dict(channels=8, groups=2), ValueError, "'se' takes no groups"),
    ("var2_kernel", "se_var2", dict(channels=8, kernel_size=3), ValueError, "takes no kernel_size"),
    ("eca_ns_even_k", "eca_ns", dict(channels=8, kernel_size=4), ValueError, "odd"),
    ("se_zero_rd", "se", dict(channels=8, rd_channels=0), ValueError, "rd_channels must be >= 1"),
    ("zero_channels", "se_var3", dict(channels=0), ValueError, "channels must be >= 1"),
    ("float_channels", "se_var1", dict(channels=8.0), TypeError, "channels must be an int"),
    ("bad_gate", "se_var3", dict(channels=8, gate="relu"), ValueError, "gate must be one of"),
    ("bad_format", "se", dict(channels=8, data_format="NCHW"), ValueError, "data_format must be"),
    ("unknown", "cbam", dict(channels=8), ValueError, "attention must be one of"),
]


@pytest.mark.parametrize(
    "name,kind,kwargs,exc,match", BAD_CONSTRUCTOR, ids=[b[0] for b in BAD_CONSTRUCTOR]
)
def test_bad_constructor(name, kind, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        make_attention(kind, **kwargs)


def test_classes_raise_the_shared_errors_directly():
    for build, match in (
        (lambda: SEGC(10, groups=4), "divisible by groups"),
        (lambda: ECANS(8, kernel_size=2), "odd"),
        (lambda: SE(8, rd_divisor=0), "rd_divisor must be >= 1"),
        (lambda: SEVar2(8, gate="tanh"), "gate must be one of"),
    ):
        with pytest.raises(ValueError, match=match):
            build()


# ---------------------------------------------------------------------------------------------
# weights: names, counts, init, canonical files, repr


@pytest.mark.parametrize("kind", ATTENTIONS)
def test_state_dict_is_the_canonical_schema_and_count(kind):
    layer = _build(kind, channels=64, **({"groups": 8} if kind == "se_gc" else {}))
    schema = attention_schema(layer.config)
    state = layer.state_dict()
    assert {n: tuple(v.shape) for n, v in state.items()} == {n: s for n, (s, _) in schema.items()}
    n = sum(p.numel() for p in layer.parameters())
    c, cfg = 64, layer.config
    k = cfg.kernel_size if kind in ("eca", "eca_ns") else 0
    formula = {
        "eca": k,
        "eca_ns": k * c,
        "se": 2 * c * (c // 4) + c // 4 + c,  # reduction=4: C/r = 16
        "se_var1": 0,
        "se_var2": c,
        "se_var3": c * c,
        "se_gc": c * c // 8,
    }[kind]
    assert n == param_count(cfg) == formula, f"{layer!r}: {n} params, formula {formula}"


@pytest.mark.parametrize("kind", FAMILY)
def test_init_follows_init_bounds(kind):
    """Each weight / bias ~ U(-b, b), b = 1/sqrt(fan_in): all inside, the largest near b."""
    layer = _build(kind, channels=64, **({"groups": 4} if kind == "se_gc" else {}))
    for name, b in init_bounds(layer.config).items():
        w = layer.get_parameter(name).detach().abs()
        hi = float(w.max())
        assert hi <= b and (w.numel() < 16 or hi > 0.7 * b), (
            f"{layer!r} {name}: max |w| = {hi:.4f}, bound {b:.4f} ({w.numel()} values)"
        )


@pytest.mark.parametrize("kind", FAMILY)
def test_canonical_round_trip_through_file(tmp_path, kind):
    src, dst = _build(kind), make_attention(kind, 12, **KW12.get(kind, {}))
    state = export_canonical(src)
    assert list(state) == list(attention_schema(src.config)), list(state)
    assert all(a.dtype == np.float32 for a in state.values()), {
        k: a.dtype for k, a in state.items()
    }
    path = save_file(tmp_path / f"{kind}.safetensors", state, {"source": "torch"})
    loaded, _ = load_file(path)
    load_canonical(dst, loaded)
    x = torch.randn(2, 12, 3, 3)
    assert torch.equal(dst(x), src(x)), f"{src!r}: outputs differ after the round trip"
    half = make_attention(kind, 12, **KW12.get(kind, {}), dtype=torch.bfloat16)
    load_canonical(half, loaded)  # the module keeps its dtype; values rounded to it
    for n, v in loaded.items():
        p = half.get_parameter(n)
        assert p.dtype == torch.bfloat16 and torch.equal(p, torch.as_tensor(v).bfloat16()), n


def test_load_lists_every_bad_key():
    layer = SE(32, rd_channels=4)
    state = export_canonical(layer)
    state["fc1.weight"] = np.zeros((8, 32, 1, 1), np.float32)  # another hidden width
    del state["fc2.bias"]
    state["fc3.weight"] = np.zeros(3, np.float32)
    with pytest.raises(WeightMismatchError) as info:
        load_canonical(layer, state)
    msg = str(info.value)
    for part in ("fc1.weight: expected (4, 32, 1, 1), got (8, 32, 1, 1)", "fc2.bias", "fc3.weight"):
        assert part in msg, msg
    seg = SEGC(16, groups=4)
    with pytest.raises(WeightMismatchError, match=r"fc\.weight: expected \(16, 4\), got \(16, 8\)"):
        load_canonical(seg, {"fc.weight": np.zeros((16, 8), np.float32)})


def test_repr_and_from_config():
    assert repr(SE(64)) == "SE(channels=64, rd_channels=4, data_format='channels_first')"
    assert repr(SEGC(64, 4, gate="hard_sigmoid", data_format=CL)) == (
        "SEGC(channels=64, groups=4, gate='hard_sigmoid', data_format='channels_last')"
    )
    assert repr(ECANS(256, padding="circular")) == (
        "ECANS(channels=256, kernel_size=5, padding='circular', data_format='channels_first')"
    )
    assert repr(SEVar1(8)) == "SEVar1(channels=8, data_format='channels_first')"
    assert repr(SEVar3(8, data_format=CL)) == "SEVar3(channels=8, data_format='channels_last')"
    for kind in ATTENTIONS:
        layer = _build(kind, gate="hard_sigmoid", data_format=CL)
        again = from_config(layer.config, dtype=torch.float64)
        assert type(again) is type(layer) and again.config == layer.config, (layer, again)
        assert all(p.dtype == torch.float64 for p in again.parameters())
    cfg = attention_config("se", 64, rd_divisor=8)
    assert from_config(cfg).fc1.out_channels == 8


# ---------------------------------------------------------------------------------------------
# timm's SEModule: the oracle for SE (same names, layout and width rule)


def test_se_width_rule_equals_timm_make_divisible():
    from timm.layers import make_divisible

    bad = [
        c
        for c in range(1, 4097)
        if se_reduced_channels(c, 16, 8) != make_divisible(c / 16, 8, round_limit=0.0)
    ]
    assert not bad, f"rd_divisor=8 width differs from timm for C in {bad[:10]}"


@pytest.mark.parametrize("channels", [8, 64, 100, 256])
@pytest.mark.parametrize("direction", ["timm_to_ours", "ours_to_timm"])
def test_se_equals_timm_semodule(channels, direction):
    from timm.layers import SEModule

    torch.manual_seed(channels)
    theirs = SEModule(channels)  # rd_ratio 1/16, rd_divisor 8
    ours = SE(channels, rd_divisor=8)
    assert ours.fc1.out_channels == theirs.fc1.out_channels, (ours, theirs.fc1)
    src, dst = (theirs, ours) if direction == "timm_to_ours" else (ours, theirs)
    dst.load_state_dict(src.state_dict(), strict=True)
    x, g = torch.randn(3, channels, 5, 6), torch.randn(3, channels, 5, 6)
    res = []
    for m in (ours, theirs):
        xi = x.clone().requires_grad_(True)
        y = m(xi)
        ps = [m.fc1.weight, m.fc1.bias, m.fc2.weight, m.fc2.bias]
        res.append([y.detach(), *torch.autograd.grad(y, (xi, *ps), g)])
    eps = torch.finfo(torch.float32).eps
    for name, a, b in zip(("y", "dx", "dfc1.w", "dfc1.b", "dfc2.w", "dfc2.b"), *res, strict=True):
        d, scale = float((a - b).abs().max()), float(b.abs().max())
        assert d <= 16 * eps * scale, (
            f"SE vs timm SEModule C={channels} {name}: max_abs={d:.2e} > 16 eps x {scale:.2e}"
        )


def test_timm_seresnet_weights_load_into_our_builder():
    """timm's SE-ResNet-50-T is our ``ecaresnet50t`` with ``attention="se"`` at timm's width
    (``rd_divisor=8``): same keys and shapes, its state dict loads strict, and the logits agree.
    The torchvision-style ``eca_resnet50`` matches timm's ``seresnet50`` up to the attribute name
    (``eca`` vs timm's ``se``)."""
    import timm

    torch.manual_seed(0)
    theirs = M.randomize_batchnorm_(
        timm.create_model("seresnet50t", pretrained=False, num_classes=10),
        name="ecaresnet50t",
        image_size=64,
    )
    ours = M.create_model("ecaresnet50t", 10, attention="se", attention_kwargs={"rd_divisor": 8})
    a, b = ours.state_dict(), theirs.state_dict()
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    ours.load_state_dict(b, strict=True)
    state = IO.export_canonical_model(theirs)
    IO.load_canonical_model(ours, state, "ecaresnet50t")  # our schema check accepts timm's file
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        got, want = ours.eval()(x), theirs.eval()(x)
    d, scale = float((got - want).abs().max()), float(want.abs().max())
    assert d <= 1e-5 * scale, f"ecaresnet50t+SE vs timm seresnet50t logits: max_abs {d:.2e}"

    official = M.create_model(
        "eca_resnet50", 10, attention="se", attention_kwargs={"rd_divisor": 8}
    )
    se50 = timm.create_model("seresnet50", pretrained=False, num_classes=10).state_dict()
    renamed = {k.replace(".eca.", ".se."): tuple(v.shape) for k, v in official.state_dict().items()}
    assert renamed == {k: tuple(v.shape) for k, v in se50.items()}


# ---------------------------------------------------------------------------------------------
# models: ECA-ResNet-50 with every attention, and the parameter formula summed over blocks

_BASE: dict[str, int] = {}


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("kind", [*ATTENTIONS, None], ids=[*ATTENTIONS, "none"])
def test_eca_resnet50_with_each_attention(kind):
    name = "eca_resnet50"
    if not _BASE:
        _BASE[name] = _count(M.create_model(name, 10, attention=None))
    torch.manual_seed(0)
    model = M.create_model(name, num_classes=10, attention=kind)
    want = archs.schema(name, 10, None, kind)
    state = model.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: s for k, (s, _) in want.items()}
    extra, formula = _count(model) - _BASE[name], archs.attention_params(name, kind)
    assert extra == formula, f"{name} attention={kind}: +{extra} params, formula {formula}"
    x = torch.randn(2, 3, 64, 64)
    y = model(x)
    assert y.shape == (2, 10) and bool(torch.isfinite(y).all()), f"{kind}: {y.shape}"
    y.square().mean().backward()
    att = {k: p.grad for k, p in model.named_parameters() if ".eca." in k}
    assert len(att) == len([k for k in want if ".eca." in k])
    dead = [k for k, gr in att.items() if gr is None or float(gr.abs().max()) == 0.0]
    assert not dead, f"{kind}: attention weights without gradient: {dead[:5]}"


def test_mobilenet_v2_and_canonical_model_round_trip_with_attention():
    torch.manual_seed(0)
    base = _count(M.create_model("eca_mobilenet_v2", 10, attention=None))
    model = M.create_model("eca_mobilenet_v2", 10, attention="se_gc")
    extra = _count(model) - base
    assert extra == archs.attention_params("eca_mobilenet_v2", "se_gc"), extra
    assert list(model.state_dict()) == list(archs.schema("eca_mobilenet_v2", 10, None, "se_gc"))
    state = IO.export_canonical_model(model)
    other = M.create_model("eca_mobilenet_v2", 10, attention="se_gc")
    IO.load_canonical_model(other, state, "eca_mobilenet_v2")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(other.eval()(x), model.eval()(x))
    wrong = M.create_model(
        "eca_mobilenet_v2", 10, attention="se_gc", attention_kwargs={"groups": 8}
    )
    with pytest.raises(WeightMismatchError, match=r"features\.1\.conv\.3\.fc\.weight: expected"):
        IO.load_canonical_model(wrong, state, "eca_mobilenet_v2")
    with pytest.raises(ValueError, match="attention must be None or one of"):
        M.create_model("eca_resnet18", attention="cbam")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("kind", ATTENTIONS)
def test_block_fused_add_is_forward_plus_residual(kind, dtype):
    """The fused gate-multiply + shortcut add the ResNet blocks run on an attention's (N, C)
    gate (``scale_add(x, layer.attention(x), r)``) is ``layer(x) + residual`` up to one rounding
    (addcmul may round ``r + x * s`` once, as an FMA), with the same gradients."""
    kw = {"se_gc": {"groups": 4}}.get(kind, {})
    layer = make_attention(kind, 16, **kw)
    dt = getattr(torch, dtype)
    x = torch.randn(2, 16, 5, 3, dtype=dt, requires_grad=True)
    r = torch.randn(2, 16, 5, 3, dtype=dt, requires_grad=True)
    fused = scale_add(x, layer.attention(x), r, layer.config)
    plain = layer(x) + r
    assert fused.dtype == plain.dtype == dt
    d = (fused.float() - plain.float()).abs().max().item()
    bound = torch.finfo(dt).eps * plain.float().abs().max().item()  # one ulp of the largest value
    assert d <= bound, f"torch/{kind}/{dtype}: fused vs layer(x) + r: {d:.2e} > {bound:.2e}"
    g = torch.randn_like(plain)
    got = torch.autograd.grad(fused, (x, r, *layer.parameters()), g)
    want = torch.autograd.grad(plain, (x, r, *layer.parameters()), g)
    for a, b in zip(got, want, strict=True):
        d = (a.float() - b.float()).abs().max().item()
        scale = b.float().abs().max().item() or 1.0
        assert d <= 1e-6 * scale, f"torch/{kind}/{dtype}: fused gradient off by {d:.2e}"
