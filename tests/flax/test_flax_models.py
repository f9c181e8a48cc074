"""Flax NNX model zoo against real oracles: every architecture's eval logits equal the torch
model's (timm itself for timm's ECA-ResNets, our torch model for the official family) after a port
through canonical weights; parameter counts; bit-identical export; strict loading; the msgpack
export; a train step; jit against eager; the pooling conventions against torch's own layers."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from common import OFFICIAL_PARAMS, read_through_source_file
from flax import nnx

from eca_multi import archs
from eca_multi.flax.io import (
    export_canonical_model,
    is_flax_export,
    load_canonical_model,
    load_weights_file,
    save_weights_file,
)
from eca_multi.flax.models import ECABlock, _AvgPoolCeil, _max_pool, abstract_model, create_model
from eca_multi.weights import WeightMismatchError

ATOL = 1e-4  # the acceptance bound on max abs logit difference
PARAMS = OFFICIAL_PARAMS  # the numbers (tests/common.py)
# (arch, input size): every architecture at 224, and a timm avg-down path at an odd size
# the graph architectures (timm's NFNet, ByobNet, pruned ResNets): tests/test_graph_archs.py
PLANNED = [n for n, a in archs.ARCHS.items() if a.kind != "graph"]
CASES = [(n, 224) for n in PLANNED] + [("ecaresnet26t", 225)]


@pytest.fixture(scope="module", autouse=True)
def _full_precision():
    with jax.default_matmul_precision("highest"):  # no reduced-precision matmuls before comparing
        yield


def torch_model(name: str) -> torch.nn.Module:
    """The oracle: timm's model for timm archs, our torch model of the official code otherwise."""
    if archs.get_arch(name).family == "timm":
        import timm

        return timm.create_model(name, pretrained=False)
    from eca_multi.torch.models import create_model as torch_create_model

    return torch_create_model(name)


def randomize(name: str, state: dict[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded non-trivial BatchNorm statistics and affine parameters in a canonical state.

    The last BatchNorm of each residual branch gets gamma * 0.2 (cf. timm's zero_init_last) so
    150-270-layer nets keep logits O(1): with gamma ~ U(0.5, 1.5) there eca_resnet152's logits
    reach 5e5 and ecaresnet269d's 1e11, where float32 rounding alone exceeds 1e-4.
    """
    arch, rng, out = archs.get_arch(name), np.random.default_rng(seed), dict(state)
    if isinstance(arch, archs.MobileNetV2Arch):
        last = {b.convs()[-1][1] for b in archs.mobilenet_v2_blocks(arch)}
    else:
        last = {archs.block_convs(b)[-1][1] for b in archs.resnet_blocks(arch)}
    for key, value in state.items():
        if key.endswith(".running_var"):
            bn, c = key[: -len(".running_var")], value.shape[0]
            out[f"{bn}.running_mean"] = rng.normal(0, 0.1, c).astype(np.float32)
            out[key] = rng.uniform(0.5, 1.5, c).astype(np.float32)
            gamma = rng.uniform(0.5, 1.5, c) * (0.2 if bn in last else 1.0)
            out[f"{bn}.weight"] = gamma.astype(np.float32)
            out[f"{bn}.bias"] = rng.normal(0, 0.1, c).astype(np.float32)
            out[f"{bn}.num_batches_tracked"] = np.array(rng.integers(1, 10_000), np.int64)
    return out


@dataclass
class Ported:
    max_diff: float
    max_logit: float
    params: int
    round_trip: list[str]  # names whose export differs from the source (bits or dtype)
    seconds: dict[str, float]


@functools.cache
def port(name: str, size: int) -> Ported:
    """torch oracle -> canonical -> Flax (abstract model, no random init), eval logits of both.

    Only numbers are cached (no models kept: the largest net has 100M parameters).
    """
    t0 = time.perf_counter()
    src = torch_model(name).eval()
    state = randomize(name, {k: v.numpy() for k, v in src.state_dict().items()})
    src.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = src(x).numpy()
    del src
    state = read_through_source_file(name, state)  # the real checkpoint format, read back
    t1 = time.perf_counter()
    model = abstract_model(name)
    load_canonical_model(model, state, name=name)
    t2 = time.perf_counter()
    # NCHW -> NHWC; eager NNX: jit compiles of the deep nets take longer than they run (measured)
    out = np.asarray(model(jnp.asarray(x.numpy().transpose(0, 2, 3, 1))))
    t3 = time.perf_counter()
    exported = export_canonical_model(model)
    differs = [
        k
        for k in state
        if exported[k].dtype != state[k].dtype or not np.array_equal(exported[k], state[k])
    ]
    params = sum(v.size for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
    return Ported(
        float(np.abs(out - ref).max()),
        float(np.abs(ref).max()),
        params,
        differs + sorted(set(exported) ^ set(state)),
        {"torch": t1 - t0, "build+load": t2 - t1, "flax fwd": t3 - t2},
    )


@pytest.mark.parametrize("name,size", CASES, ids=[f"{n}-{s}" for n, s in CASES])
def test_logits_match_oracle(name, size):
    r = port(name, size)
    timing = ", ".join(f"{k} {v:.1f}s" for k, v in r.seconds.items())
    assert r.max_diff <= ATOL, (
        f"flax/{name}@{size}/logits: max_abs={r.max_diff:.2e} > atol={ATOL:.0e} "
        f"(max |logit| {r.max_logit:.2f}; {timing})"
    )


@pytest.mark.parametrize("name", PLANNED)
def test_export_round_trip_bit_identical(name):
    r = port(name, 224)
    assert not r.round_trip, f"flax/{name}: export differs from the loaded weights: {r.round_trip}"


@pytest.mark.parametrize("name", list(PARAMS))
def test_param_count_official(name):
    assert port(name, 224).params == PARAMS[name], f"flax/{name}: parameter count"


def test_created_and_abstract_models_agree():
    """create_model (random init) has abstract_model's variables, shapes and dtypes."""

    def shapes(m):
        return {
            p: (v.get_value().shape, v.get_value().dtype, type(v).__name__)
            for p, v in nnx.to_flat_state(nnx.state(m))
        }

    model = create_model("eca_resnet18")
    assert shapes(model) == shapes(abstract_model("eca_resnet18"))
    params = sum(v.size for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert params == PARAMS["eca_resnet18"]


# ---------------------------------------------------------------------------------------------
# a small concrete model for the remaining checks


@pytest.fixture(scope="module")
def small():
    """eca_resnet18 with 10 classes, random weights plus random BatchNorm statistics."""
    model = create_model("eca_resnet18", num_classes=10, rngs=nnx.Rngs(3))
    load_canonical_model(model, randomize("eca_resnet18", export_canonical_model(model), 5))
    return model


@pytest.fixture(scope="module")
def x_small():
    return jnp.asarray(np.random.default_rng(0).standard_normal((2, 64, 64, 3)), jnp.float32)


def test_state_paths_are_canonical(small):
    """nnx.state paths mirror the torch names: layer1 -> 0 -> eca -> kernel."""
    flat = {".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(small))}
    assert "layer1.0.eca.kernel" in flat and "layer2.0.downsample.0.kernel" in flat
    assert "layer1.0.bn1.num_batches_tracked" in flat and "fc.kernel" in flat
    assert small.kernel_sizes == (3, 5, 7, 7) and small.layer4[1].eca.config.kernel_size == 7


def test_wrong_kernel_size_lists_every_eca(small):
    state = export_canonical_model(small)
    other = abstract_model("eca_resnet18", num_classes=10, kernel_sizes=(3, 3, 3, 3))
    with pytest.raises(WeightMismatchError) as e:
        load_canonical_model(other, state)
    bad = {k for k in e.value.mismatched if k.endswith(".eca.conv.weight")}
    assert bad == {f"layer{s}.{i}.eca.conv.weight" for s in (2, 3, 4) for i in (0, 1)}, str(e.value)
    assert e.value.mismatched["layer4.0.eca.conv.weight"] == ((1, 1, 3), (1, 1, 7))


def test_missing_unexpected_and_misshaped_in_one_error(small):
    state = export_canonical_model(small)
    del state["fc.bias"], state["layer1.0.bn1.running_var"]
    state["bogus.weight"] = np.zeros(3, np.float32)
    state["fc.weight"] = np.zeros((11, 512), np.float32)
    target = abstract_model("eca_resnet18", num_classes=10)
    with pytest.raises(WeightMismatchError) as e:
        load_canonical_model(target, state)
    err = e.value
    assert err.missing == ["fc.bias", "layer1.0.bn1.running_var"], str(err)
    assert err.unexpected == ["bogus.weight"], str(err)
    assert err.mismatched == {"fc.weight": ((10, 512), (11, 512))}, str(err)


def test_lenient_load_and_errors(small):
    state = export_canonical_model(small)
    model = create_model("eca_resnet18", num_classes=10)
    partial = {k: v for k, v in state.items() if not k.startswith("fc.")}
    load_canonical_model(model, partial, strict=False)  # fc keeps its random init
    assert np.array_equal(
        np.asarray(model.layer3[0].eca.kernel[...]), np.asarray(small.layer3[0].eca.kernel[...])
    )
    assert not np.array_equal(np.asarray(model.fc.kernel[...]), np.asarray(small.fc.kernel[...]))
    with pytest.raises(ValueError, match="needs every weight.*fc.bias"):
        load_canonical_model(abstract_model("eca_resnet18", 10), partial, strict=False)
    with pytest.raises(ValueError, match="'eca_resnet34'.*'eca_resnet18'"):
        load_canonical_model(model, state, name="eca_resnet34")


def test_msgpack_round_trip(small, x_small, tmp_path):
    path = save_weights_file(small, tmp_path / "r18.msgpack")
    assert is_flax_export(path)
    loaded = load_weights_file(path, "eca_resnet18")
    same = jax.tree.map(
        lambda a, b: bool(np.array_equal(a, b) and a.dtype == b.dtype),
        nnx.to_pure_dict(nnx.state(small)),
        nnx.to_pure_dict(nnx.state(loaded)),
    )
    assert all(jax.tree.leaves(same))
    assert np.array_equal(np.asarray(loaded(x_small)), np.asarray(small(x_small)))
    with pytest.raises(FileExistsError, match="overwrite"):
        save_weights_file(small, path)
    save_weights_file(small, path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r18.msgpack"]  # no temp file left


def test_msgpack_kernel_sizes_from_checkpoint(tmp_path):
    model = create_model("eca_resnet18", num_classes=10, kernel_sizes=(1, 3, 3, 5))
    path = save_weights_file(model, tmp_path / "k.msgpack")
    with pytest.raises(WeightMismatchError, match=r"layer2\.0\.eca\.kernel"):
        load_weights_file(path, "eca_resnet18")  # default (3, 5, 7, 7) disagrees with the file
    loaded = load_weights_file(path, "eca_resnet18", kernel_sizes="checkpoint")
    assert loaded.kernel_sizes == (1, 3, 3, 5)
    assert np.array_equal(
        export_canonical_model(loaded)["layer4.1.eca.conv.weight"],
        export_canonical_model(model)["layer4.1.eca.conv.weight"],
    )


def test_msgpack_detection_and_bad_files(tmp_path):
    junk = tmp_path / "junk.msgpack"
    junk.write_bytes(b"\x00\x01 not msgpack")
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    assert not is_flax_export(junk) and not is_flax_export(other)
    assert not is_flax_export(tmp_path / "absent")
    for path in (junk, other):
        with pytest.raises(ValueError, match="eca-multi Flax export"):
            load_weights_file(path, "eca_resnet18")
    model = create_model("eca_resnet18", num_classes=10)
    path = save_weights_file(model, tmp_path / "r18.msgpack")
    with pytest.raises(ValueError, match="holds 'eca_resnet18' weights, not 'eca_resnet34'"):
        load_weights_file(path, "eca_resnet34")
    truncated = tmp_path / "cut.msgpack"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="eca-multi Flax export"):
        load_weights_file(truncated, "eca_resnet18")


def test_train_mode_matches_torch(small, x_small):
    """Train-mode logits (batch statistics) and the updated running statistics equal torch's.

    layer4 sees 2 x 2 x 2 = 8 values per channel, so torch's unbiased running_var (x 8/7) shows.
    """
    from eca_multi.torch.models import create_model as torch_create_model

    state = export_canonical_model(small)
    src = torch_create_model("eca_resnet18", 10)
    src.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)
    src.train()
    with torch.no_grad():
        ref = src(torch.from_numpy(np.array(x_small).transpose(0, 3, 1, 2))).numpy()
    model = abstract_model("eca_resnet18", num_classes=10)
    load_canonical_model(model, state)
    model.train()  # NNX BatchNorm: batch statistics, running averages updated
    d = float(np.abs(np.asarray(model(x_small)) - ref).max())
    assert d <= ATOL, f"flax/eca_resnet18/train logits: max_abs={d:.2e} > atol={ATOL:.0e}"
    got, want = export_canonical_model(model), src.state_dict()
    for key in [k for k in want if k.endswith(".num_batches_tracked")]:
        assert int(got[key]) == int(want[key]), (
            f"flax/eca_resnet18/{key}: {got[key]} != {want[key]}"
        )
    for key in [k for k in want if ".running_" in k]:
        w = want[key].numpy()
        err = float(np.abs(got[key] - w).max() / np.abs(w).max())
        assert err <= 1e-5, f"flax/eca_resnet18/{key} after a train step: max_rel={err:.2e}"


@nnx.jit  # measured: compiling the step beats eager op-by-op dispatch 3x on CPU
def _train_step(model, x, y, rngs):
    def loss_fn(m, rngs):
        logits = m(x, rngs=rngs)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

    loss, grads = nnx.value_and_grad(loss_fn)(model, rngs)  # BatchNorm statistics update in place
    params = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda p, g: p - 0.1 * g, params, grads))
    return loss, grads


def test_train_step_updates_params_and_batch_stats(x_small):
    model = create_model("eca_resnet18", num_classes=10, rngs=nnx.Rngs(1))
    before = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model)))
    model.train()  # BatchNorm: batch statistics, running averages updated (momentum 0.9)
    loss, grads = _train_step(model, x_small, jnp.array([1, 7]), nnx.Rngs(0))
    model.eval()
    after = nnx.to_pure_dict(nnx.state(model))
    assert np.isfinite(float(loss))
    g_eca = np.asarray(grads["layer3"][1]["eca"]["kernel"][...])
    assert np.all(np.isfinite(g_eca)) and np.any(g_eca != 0), "no gradient reaches ECA"
    bn = after["layer1"][0]["bn1"]
    assert int(bn["num_batches_tracked"]) == 1
    assert not np.allclose(np.asarray(bn["mean"]), before["layer1"][0]["bn1"]["mean"])
    assert not np.array_equal(
        np.asarray(after["layer4"][1]["eca"]["kernel"]), before["layer4"][1]["eca"]["kernel"]
    )
    assert model.layer1[0].bn1.use_running_average  # back in eval mode
    model(x_small)
    assert int(model.layer1[0].bn1.num_batches_tracked[...]) == 1  # eval batches are not counted


def test_train_step_mobilenet_with_dropout():
    """MobileNetV2's Dropout takes a ``dropout`` stream at call time in train mode."""
    from eca_multi.torch.models import create_model as torch_create_model

    model = abstract_model("eca_mobilenet_v2", num_classes=5)
    load_canonical_model(
        model,
        {k: v.numpy() for k, v in torch_create_model("eca_mobilenet_v2", 5).state_dict().items()},
    )
    x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 32, 32, 3)), jnp.float32)
    model.train()
    loss, _ = _train_step(model, x, jnp.array([0, 3]), rngs=nnx.Rngs(dropout=0))
    assert np.isfinite(float(loss))
    assert int(model.features[5].conv[1][1].num_batches_tracked[...]) == 1


def test_jit_matches_eager(small, x_small):
    eager = np.asarray(small(x_small))
    compiled = np.asarray(nnx.jit(lambda m, x: m(x))(small, x_small))
    # not bit-identical: XLA fuses BatchNorm into the convolutions under jit and reorders float32
    # sums (measured max 9.7e-08 at |logit| ~ 0.5), so the check is a rounding-level tolerance
    np.testing.assert_allclose(
        compiled, eager, rtol=0, atol=2e-6, err_msg="flax/eca_resnet18: nnx.jit vs eager"
    )


def test_bfloat16_compute(small, x_small):
    model = create_model("eca_resnet18", num_classes=10, dtype=jnp.bfloat16)
    load_canonical_model(model, export_canonical_model(small))
    out = model(x_small.astype(jnp.bfloat16))
    assert out.dtype == jnp.bfloat16 and model.fc.kernel[...].dtype == jnp.float32
    ref = np.asarray(small(x_small))
    assert np.abs(np.asarray(out, np.float32) - ref).max() < 0.1 * (1 + np.abs(ref).max())


# ---------------------------------------------------------------------------------------------
# pooling conventions against torch's own layers


@pytest.mark.parametrize("h,w", [(8, 8), (7, 9), (1, 3), (225, 113)])
def test_avg_pool_ceil_mode_matches_torch(h, w):
    x = np.random.default_rng(h * w).standard_normal((2, 3, h, w)).astype(np.float32)
    pool = torch.nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)
    ref = pool(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
    out = np.asarray(_AvgPoolCeil()(jnp.asarray(x.transpose(0, 2, 3, 1))))
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("h,w", [(8, 8), (7, 9), (2, 2), (113, 112)])
def test_max_pool_matches_torch(h, w):
    x = np.random.default_rng(h + w).standard_normal((2, 3, h, w)).astype(np.float32) - 5.0
    ref = torch.nn.MaxPool2d(3, 2, 1)(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
    out = np.asarray(_max_pool(jnp.asarray(x.transpose(0, 2, 3, 1))))
    assert np.array_equal(out, ref)  # a max is exact; all-negative input: padding never wins


def _set_pools_through(model, on: bool) -> list[bool]:
    flags = []
    for _, node in nnx.iter_graph(model):
        if isinstance(node, ECABlock):
            flags.append(node.pools_through)
            node.pools_through = on and len(node.pairs) == 3  # bottlenecks only
    return flags


@pytest.mark.parametrize("attention", ["eca", "se"])
def test_bottleneck_pools_conv3_input_at_inference(attention):
    """Eval mode: the attention pools conv3's input (archs.pools_through_last_conv); the logits
    equal the plain pooling of the block output up to float32 rounding. Train mode: unused."""
    model = create_model("eca_resnet50", rngs=nnx.Rngs(0), attention=attention)
    state = randomize("eca_resnet50", export_canonical_model(model))
    load_canonical_model(model, state, name="eca_resnet50")
    x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 64, 64, 3), np.float32))
    flags = _set_pools_through(model, True)
    assert flags and all(flags), f"{attention}: every bottleneck block pools early: {flags}"
    model.eval()
    fast = np.asarray(model(x))
    _set_pools_through(model, False)
    slow = np.asarray(model(x))
    err = float(np.abs(fast - slow).max())
    assert 0 < err <= 1e-5 * float(np.abs(slow).max()), f"{attention}: max abs {err:.2e}"
    model.train()  # batch statistics: the flag must not change anything
    _set_pools_through(model, False)
    off = np.asarray(model(x))
    _set_pools_through(model, True)
    assert np.array_equal(np.asarray(model(x)), off), f"{attention}: train mode changed"


def test_basic_blocks_do_not_pool_through():
    model = create_model("eca_resnet18", rngs=nnx.Rngs(0))
    flags = [n.pools_through for _, n in nnx.iter_graph(model) if isinstance(n, ECABlock)]
    assert flags and not any(flags), flags
