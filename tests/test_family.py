"""The channel-attention family in the float64 reference: gradients, identities, counts, errors."""

from __future__ import annotations

import numpy as np
import pytest

from eca_multi import archs, reference
from eca_multi.family import (
    ATTENTIONS,
    attention_config,
    attention_schema,
    attention_table,
    init_bounds,
    param_count,
    se_reduced_channels,
)
from eca_multi.weights.schema import WeightMismatchError

# (kind, constructor args) on C = 12 channels
KINDS = [
    ("eca", dict(kernel_size=3)),
    ("eca_ns", dict(kernel_size=5)),
    ("eca_ns", dict(kernel_size=3, padding="circular")),
    ("se", dict(rd_channels=3)),
    ("se_var1", {}),
    ("se_var2", {}),
    ("se_var3", {}),
    ("se_gc", dict(groups=3)),
]
IDS = [f"{k}-{'-'.join(f'{a}{v}' for a, v in kw.items())}" for k, kw in KINDS]


def _params(kind, kw, c=12, seed=0):
    cfg = attention_config(kind, c, **kw)
    rng = np.random.default_rng(seed)
    return {n: rng.uniform(-1, 1, s) for n, (s, _) in attention_schema(cfg).items()}


@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid"])
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize(("kind", "kw"), KINDS, ids=IDS)
def test_backward_matches_finite_differences(kind, kw, data_format, gate):
    rng = np.random.default_rng(1)
    shape = (2, 12, 3, 2) if data_format == "channels_first" else (2, 3, 2, 12)
    x, g = rng.standard_normal(shape) * 2, rng.standard_normal(shape)
    p = _params(kind, kw)
    kw = dict(kw, data_format=data_format, gate=gate)
    dx, dp = reference.attention_backward(x, p, g, kind, **kw)
    assert set(dp) == set(p)

    def loss(x_, p_):
        return float((g * reference.attention_forward(x_, p_, kind, **kw)).sum())

    eps = 1e-6
    for idx in [(0, 0, 0, 0), (1, 2, 1, 1), (0, 1, 1, 0)]:
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        num = (loss(xp, p) - loss(xm, p)) / (2 * eps)
        assert abs(num - dx[idx]) < 1e-6, f"{kind}/{data_format}/{gate}/dx{idx}: {num} vs {dx[idx]}"
    for name, v in p.items():
        flat = [0, v.size // 2, v.size - 1]
        for i in flat:
            pp = {n: a.copy() for n, a in p.items()}
            pm = {n: a.copy() for n, a in p.items()}
            pp[name].flat[i] += eps
            pm[name].flat[i] -= eps
            num = (loss(x, pp) - loss(x, pm)) / (2 * eps)
            got = dp[name].flat[i]
            assert abs(num - got) < 1e-6, f"{kind}/{name}[{i}]: numeric {num} vs analytic {got}"


def test_eca_through_the_family_path_is_eca():
    rng = np.random.default_rng(2)
    x, g, w = rng.standard_normal((2, 9, 4)), rng.standard_normal((2, 9, 4)), rng.uniform(-1, 1, 5)
    w = w.reshape(1, 1, 5)
    y = reference.attention_forward(x, {"conv.weight": w}, "eca")
    np.testing.assert_array_equal(y, reference.forward(x, w))
    dx, dp = reference.attention_backward(x, {"conv.weight": w}, g, "eca")
    dx0, dw0 = reference.backward(x, w, g)
    np.testing.assert_array_equal(dx, dx0)
    np.testing.assert_array_equal(dp["conv.weight"], dw0)


def test_identities_between_members():
    """ECA-NS with equal rows is ECA; SE-GC with G=1 is SE-Var3; with G=C it is SE-Var2;
    SE-Var3 with the identity matrix is SE-Var1."""
    rng = np.random.default_rng(3)
    c = 8
    x = rng.standard_normal((3, c, 5))
    w = rng.uniform(-1, 1, 3)
    eca = reference.attention_forward(x, {"conv.weight": w.reshape(1, 1, 3)}, "eca")
    ns = reference.attention_forward(x, {"weight": np.tile(w, (c, 1))}, "eca_ns")
    np.testing.assert_allclose(ns, eca, rtol=0, atol=1e-15)
    full = rng.uniform(-1, 1, (c, c))
    var3 = reference.attention_forward(x, {"fc.weight": full}, "se_var3")
    gc1 = reference.attention_forward(x, {"fc.weight": full}, "se_gc", groups=1)
    np.testing.assert_allclose(gc1, var3, rtol=0, atol=1e-15)
    v = rng.uniform(-1, 1, c)
    var2 = reference.attention_forward(x, {"weight": v}, "se_var2")
    gcc = reference.attention_forward(x, {"fc.weight": v[:, None]}, "se_gc", groups=c)
    np.testing.assert_allclose(gcc, var2, rtol=0, atol=1e-15)
    var1 = reference.attention_forward(x, {}, "se_var1")
    eye = reference.attention_forward(x, {"fc.weight": np.eye(c)}, "se_var3")
    np.testing.assert_allclose(eye, var1, rtol=0, atol=1e-15)


def test_se_gc_is_block_diagonal_se_var3():
    rng = np.random.default_rng(4)
    c, groups = 12, 3
    x = rng.standard_normal((2, c, 3, 3))
    w = rng.uniform(-1, 1, (c, c // groups))
    dense = np.zeros((c, c))
    cg = c // groups
    for gi in range(groups):
        dense[gi * cg : (gi + 1) * cg, gi * cg : (gi + 1) * cg] = w[gi * cg : (gi + 1) * cg]
    gc = reference.attention_forward(x, {"fc.weight": w}, "se_gc", groups=groups)
    var3 = reference.attention_forward(x, {"fc.weight": dense}, "se_var3")
    np.testing.assert_allclose(gc, var3, rtol=0, atol=1e-15)


@pytest.mark.parametrize("c", [1, 16, 64, 256, 2048])
def test_parameter_counts_are_the_papers_formulas(c):
    k, groups, r = 5, 1 if c == 1 else 4, 16
    rd = max(1, c // r)
    want = {
        "se": 2 * c * rd + rd + c,
        "se_var1": 0,
        "se_var2": c,
        "se_var3": c * c,
        "se_gc": c * c // groups,
        "eca_ns": k * c,
        "eca": k,
    }
    kwargs = {"se_gc": dict(groups=groups), "eca_ns": dict(kernel_size=k)}
    kwargs["eca"] = dict(kernel_size=k)
    for kind in ATTENTIONS:
        got = param_count(attention_config(kind, c, **kwargs.get(kind, {})))
        assert got == want[kind], f"{kind} C={c}: {got} parameters, formula gives {want[kind]}"


def test_se_width_rules():
    assert [se_reduced_channels(c) for c in (8, 64, 100, 2048)] == [1, 4, 6, 128]
    # timm's make_divisible(C / 16, 8, round_limit=0)
    assert [se_reduced_channels(c, rd_divisor=8) for c in (8, 64, 100, 2048)] == [8, 8, 8, 128]
    assert attention_config("se", 64, reduction=4).rd_channels == 16


@pytest.mark.parametrize(
    ("kind", "kw", "exc", "text"),
    [
        ("se_gc", dict(groups=5), ValueError, "divisible by groups"),
        ("se_gc", {}, ValueError, "needs groups"),
        ("se", dict(groups=2), ValueError, "takes no groups"),
        ("se_var2", dict(kernel_size=3), ValueError, "takes no kernel_size"),
        ("eca_ns", dict(kernel_size=4), ValueError, "odd"),
        ("eca", dict(reduction=8), ValueError, "takes no reduction"),
        ("senet", {}, ValueError, "attention must be one of"),
        ("se", dict(rd_channels=1.5), TypeError, "rd_channels must be an int"),
        ("se_var3", dict(gate="relu"), ValueError, "gate must be one of"),
    ],
)
def test_bad_arguments_raise_clear_errors(kind, kw, exc, text):
    with pytest.raises(exc, match=text):
        attention_config(kind, 12, **kw)


def test_reference_checks_weights_and_input():
    x = np.ones((2, 12, 3))
    with pytest.raises(WeightMismatchError, match="shape mismatch for fc.weight"):
        reference.attention_forward(x, {"fc.weight": np.ones((12, 11))}, "se_var3")
    with pytest.raises(WeightMismatchError, match="missing keys"):
        reference.attention_forward(x, {"fc1.weight": np.ones((3, 12, 1, 1))}, "se")
    with pytest.raises(ValueError, match="reference SE expects a batched input of rank >= 3"):
        reference.attention_forward(np.ones((2, 12)), _params("se", dict(rd_channels=3)), "se")
    y = reference.attention_forward(np.ones((0, 12, 3)), {}, "se_var1")
    assert y.shape == (0, 12, 3)


def test_init_bounds_are_one_over_sqrt_fan_in():
    b = init_bounds(attention_config("se", 64, rd_channels=4))
    assert b == {
        "fc1.weight": 64**-0.5,
        "fc1.bias": 64**-0.5,
        "fc2.weight": 4**-0.5,
        "fc2.bias": 4**-0.5,
    }
    assert init_bounds(attention_config("se_gc", 64, groups=4)) == {"fc.weight": 16**-0.5}
    assert init_bounds(attention_config("eca_ns", 64, kernel_size=5)) == {"weight": 5**-0.5}


def test_attention_table_rows():
    rows = {r["attention"]: r for r in attention_table(256, groups=4)}
    assert rows["eca"]["params"] == 5 and rows["eca_ns"]["params"] == 5 * 256
    assert rows["se"]["params"] == 2 * 256 * 16 + 16 + 256
    assert rows["se_gc"]["params"] == 256 * 256 // 4


@pytest.mark.parametrize("attention", [None, *ATTENTIONS])
@pytest.mark.parametrize("arch", ["eca_resnet50", "ecaresnet26t", "eca_mobilenet_v2"])
def test_model_schema_adds_the_formula_per_block(arch, attention):
    """Canonical schemas: the attention adds exactly its formula summed over blocks."""

    def count(s):
        return sum(int(np.prod(shape)) for n, (shape, _) in s.items())

    plain = count(archs.schema(arch, attention=None))
    got = count(archs.schema(arch, attention=attention)) - plain
    want = archs.attention_params(arch, attention)
    if arch == "eca_resnet50":
        blocks = archs.resnet_blocks(archs.get_arch(arch))
        per_block = {"se": lambda c: 2 * c * (c // 16) + c // 16 + c, "se_var3": lambda c: c * c}
        if attention in per_block:
            assert want == sum(per_block[attention](b.outplanes) for b in blocks)
    assert got == want, f"{arch}/{attention}: schema adds {got}, formula sum {want}"


def test_builder_attention_arguments_are_checked():
    with pytest.raises(ValueError, match="attention must be None or one of"):
        archs.resnet_blocks(archs.get_arch("eca_resnet50"), attention="cbam")
    with pytest.raises(ValueError, match="attention=None"):
        archs.resnet_blocks(archs.get_arch("eca_resnet50"), None, None, dict(groups=2))
    with pytest.raises(ValueError, match="divisible by groups"):
        archs.schema("eca_resnet50", attention="se_gc", attention_kwargs=dict(groups=3))


def test_attention_table_command(capsys):
    from eca_multi.cli import main

    assert main(["attention-table", "64", "--groups", "8", "--spatial", "49"]) == 0
    out = capsys.readouterr().out
    rows = {r["attention"]: r for r in attention_table(64, groups=8, spatial=49)}
    for kind, r in rows.items():
        assert f"| {kind} | {r['name']} |" in out and f"| {r['params']:,} |" in out, out
    assert rows["se_var3"]["flops"] == 2 * 64 * 64 + 2 * 64 * 49 + 64
    assert main(["attention-table", "60", "--groups", "8"]) == 2
    assert "divisible by groups" in capsys.readouterr().err
