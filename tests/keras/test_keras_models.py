"""The Keras model zoo against real oracles: our torch models (official ECA-Nets) and timm.

Each source model gets random weights with non-trivial BatchNorm statistics, its ``state_dict``
becomes canonical NumPy tensors, the Keras model loads them and both run in eval mode on the same
224x224 batch. On the tensorflow backend every architecture of :data:`eca_multi.archs.ARCHS` is
checked; test_keras_other_backends.py reruns this file on the jax and torch Keras backends, where
the list is a light subset (one official ResNet, one timm ResNet, MobileNetV2) to keep CI short.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import keras
import numpy as np
import pytest
import torch
from common import OFFICIAL_PARAMS, read_through_source_file

from eca_multi import archs
from eca_multi.keras import ECA
from eca_multi.keras.io import (
    export_canonical_model,
    load_canonical_model,
    load_weights_file,
    save_weights_file,
)
from eca_multi.keras.models import (
    BatchNormalization,
    PooledThrough,
    TorchPool2D,
    create_model,
    keras_name,
    link_pooled_through,
    torch_path,
)
from eca_multi.torch import io as torch_io
from eca_multi.torch import models as torch_models
from eca_multi.weights import WeightMismatchError

BACKEND = keras.backend.backend()
CF, CL = "channels_first", "channels_last"
ATOL = 1e-4  # the logit tolerance (max abs), eval mode
CF_SIZE = 64  # channels_first image side (test_channels_first_equals_channels_last says why)
LIGHT = ("eca_resnet18", "ecaresnet26t", "eca_mobilenet_v2")
# heavy archs only on the tensorflow backend (the others rerun this file in a subprocess)
# the graph architectures (timm's NFNet, ByobNet, pruned ResNets): tests/test_graph_archs.py
PLANNED = tuple(n for n, a in archs.ARCHS.items() if a.kind != "graph")
ARCH_NAMES = PLANNED if BACKEND == "tensorflow" else LIGHT
ODD_SIZE_ARCHS = LIGHT if BACKEND == "tensorflow" else ("ecaresnet26t",)  # timm avg-down path
TRAIN_ARCHS = ("eca_resnet18", "eca_mobilenet_v2") if BACKEND == "tensorflow" else ("eca_resnet18",)
OFFICIAL = tuple(n for n in ARCH_NAMES if archs.ARCHS[n].family == "official")
PARAMETER_COUNTS = OFFICIAL_PARAMS  # the numbers (tests/common.py)


def numpy(t) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(t))


def image(size: int, seed: int = 0, batch: int = 1) -> np.ndarray:
    """A channels_first float32 batch (the torch layout)."""
    return np.random.default_rng(seed).standard_normal((batch, 3, size, size), dtype=np.float32)


def keras_logits(model: keras.Model, x_nchw: np.ndarray, data_format: str, training=False):
    x = x_nchw if data_format == CF else np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))
    return numpy(model(x, training=training))


def torch_logits(model: torch.nn.Module, x_nchw: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x_nchw)).numpy()


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    return float(np.max(np.abs(a.astype(np.float64) - b)))


def assert_logits(name: str, got: np.ndarray, want: np.ndarray, atol: float = ATOL) -> float:
    d = max_abs(got, want)
    print(f"\n{name}: max_abs={d:.2e} (|logits| max {np.abs(want).max():.2f})")
    assert d <= atol, (
        f"{name}: max_abs={d:.2e} > atol={atol:.0e} (|logits| max {np.abs(want).max():.2f})"
    )
    return d


def source_model(name: str, seed: int = 0) -> torch.nn.Module:
    """Our torch model (official family) or timm's (timm archs) with random, well-posed weights:
    seeded init plus eca_multi.torch.models.randomize_batchnorm_ (random affine, statistics from
    a random 224x224 image then jittered, small gamma on each residual branch's last BN so deep
    nets stay well conditioned: float32 vs float64 torch logits within 2e-5 for ecaresnet269d)."""
    torch.manual_seed(seed)
    model = torch_models.create_model(name)
    return torch_models.randomize_batchnorm_(model, seed=seed, name=name, image_size=224)


@dataclass
class Ported:
    name: str
    source: torch.nn.Module
    state: dict
    model: keras.Model  # channels_last


@pytest.fixture(scope="module", params=ARCH_NAMES)
def arch(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def ported(arch) -> Ported:
    """Source torch model, its canonical state and the Keras port; built once per architecture."""
    t0 = time.perf_counter()
    source = source_model(arch)
    # through the architecture's real checkpoint file (official .pth.tar / timm safetensors)
    state = read_through_source_file(arch, torch_io.export_canonical_model(source))
    model = create_model(arch, data_format=CL)
    load_canonical_model(model, state)
    print(f"\n{arch}: torch + keras build and port {time.perf_counter() - t0:.1f}s")
    return Ported(arch, source, state, model)


def test_logits_match_source(ported):
    """224x224, batch 1, eval mode: Keras logits within 1e-4 of the torch / timm source."""
    x = image(224)
    got = keras_logits(ported.model, x, CL)
    assert_logits(f"{ported.name}/keras-{BACKEND}/{CL}/224", got, torch_logits(ported.source, x))


@pytest.mark.parametrize("arch", ODD_SIZE_ARCHS, indirect=True)
def test_odd_input_size(ported):
    """225x225: stride-2 padding, -inf max-pool padding and timm's ceil_mode avg-pool downsample."""
    x = image(225, seed=1)
    got = keras_logits(ported.model, x, CL)
    assert_logits(f"{ported.name}/keras-{BACKEND}/{CL}/225", got, torch_logits(ported.source, x))


@pytest.mark.parametrize("arch", LIGHT, indirect=True)
def test_channels_first_equals_channels_last(ported):
    """channels_first at 64x64 (224 runs channels_last above). TensorFlow's CPU Conv2D takes
    NCHW only through oneDNN (Makefile), slowly on the 2-core AMD CI machine: one ecaresnet26t
    forward at 224 takes ~57 s (channels_last ~0.5 s), at 64 ~5 s. The layout code is the same
    at any size."""
    model = create_model(ported.name, data_format=CF)
    load_canonical_model(model, ported.state)
    x = image(CF_SIZE, seed=2)
    first, last = keras_logits(model, x, CF), keras_logits(ported.model, x, CL)
    where = f"{ported.name}/keras-{BACKEND}/{CF}/{CF_SIZE}"
    assert_logits(where, first, torch_logits(ported.source, x))
    d = max_abs(first, last)
    assert d <= 1e-5, f"{ported.name}: channels_first vs channels_last logits max_abs={d:.2e}"


def test_canonical_round_trip_bit_identical(ported):
    """torch state -> Keras -> canonical gives every float tensor back bit for bit, in order."""
    out = export_canonical_model(ported.model)
    assert list(out) == list(ported.state), "export keys / order differ from torch's state_dict"
    assert list(out) == list(archs.schema(ported.name)), "export differs from archs.schema"
    bad = [
        k
        for k, v in ported.state.items()
        if out[k].dtype != v.dtype or out[k].shape != v.shape or not np.array_equal(out[k], v)
    ]
    # num_batches_tracked included: the Keras BatchNormalization keeps torch's step counter
    assert not bad, f"{len(bad)} tensors changed in the round trip: {bad[:5]}"


@pytest.mark.parametrize("arch", LIGHT, indirect=True)
def test_export_loads_into_torch_strictly(ported):
    """Keras -> canonical -> a fresh torch / timm model (strict=True) reproduces the source."""
    target = torch_models.create_model(ported.name).eval()
    out = export_canonical_model(ported.model)
    target.load_state_dict({k: torch.from_numpy(v) for k, v in out.items()}, strict=True)
    x = image(64, seed=3)
    d = max_abs(torch_logits(target, x), torch_logits(ported.source, x))
    assert d == 0.0, f"{ported.name}: torch logits after the Keras round trip: max_abs={d:.2e}"


@pytest.mark.parametrize("arch", OFFICIAL, indirect=True)
def test_parameter_count(ported):
    model = ported.model
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert trainable == PARAMETER_COUNTS[ported.name], (
        f"{ported.name}: {trainable:,} trainable parameters, want {PARAMETER_COUNTS[ported.name]:,}"
    )
    bn_channels = sum(
        s[0][0] for k, s in archs.schema(ported.name).items() if k.endswith("running_mean")
    )
    bns = sum(1 for k in archs.schema(ported.name) if k.endswith("num_batches_tracked"))
    frozen = sum(int(np.prod(v.shape)) for v in model.non_trainable_weights)
    assert frozen == 2 * bn_channels + bns, "non-trainable: BN statistics and step counters"


# ---------------------------------------------------------------------------------------------
# light tests on one small model (every backend)


@pytest.fixture(scope="module")
def resnet18() -> keras.Model:
    return create_model("eca_resnet18", data_format=CL)


def test_layer_names_are_torch_prefixes(resnet18):
    names = {torch_path(layer.name) for layer in resnet18.layers}
    assert {"conv1", "bn1", "maxpool", "layer1.0.conv1", "layer1.0.bn1", "layer1.0.eca",
            "layer2.0.downsample.0", "layer2.0.downsample.1", "fc"} <= names  # fmt: skip
    assert "layer1-0-eca" in {layer.name for layer in resnet18.layers}, "'.' is written '-'"
    assert all("." not in layer.name for layer in resnet18.layers), "torch backend refuses '.'"
    assert torch_path(keras_name("layer2.0.downsample.1")) == "layer2.0.downsample.1"
    assert isinstance(resnet18.get_layer(keras_name("layer4.1.eca")), ECA)
    assert resnet18.get_layer(keras_name("layer4.1.eca")).config.kernel_size == 7
    assert isinstance(resnet18.get_layer("maxpool"), TorchPool2D)
    timm = create_model("ecaresnet26t", num_classes=10, input_shape=(64, 64, 3), data_format=CL)
    assert {"conv1.0", "conv1.1", "conv1.6", "layer1.0.se", "layer2.0.downsample.0",
            "layer2.0.downsample.1", "layer2.0.downsample.2"} <= {
        torch_path(la.name) for la in timm.layers}  # fmt: skip
    assert tuple(timm.output.shape) == (None, 10)


def test_wrong_kernel_size_is_refused(resnet18):
    state = export_canonical_model(create_model("eca_resnet18", kernel_sizes=(5, 5, 7, 7)))
    with pytest.raises(WeightMismatchError, match=r"ECA kernel sizes \(3, 5, 7, 7\)") as e:
        load_canonical_model(resnet18, state)
    assert set(e.value.mismatched) == {"layer1.0.eca.conv.weight", "layer1.1.eca.conv.weight"}
    assert "layer1.0.eca.conv.weight: expected (1, 1, 3), got (1, 1, 5)" in str(e.value)
    ks = archs.kernel_sizes_from_state("eca_resnet18", state)  # build from the checkpoint instead
    model = create_model("eca_resnet18", kernel_sizes=ks)
    load_canonical_model(model, state)
    assert model.get_layer(keras_name("layer1.0.eca")).config.kernel_size == 5


def test_missing_unexpected_and_misshaped_keys_listed_at_once(resnet18):
    state = export_canonical_model(resnet18)
    before = numpy(resnet18.get_layer(keras_name("conv1")).kernel)
    del state["fc.bias"], state["layer4.1.bn2.running_var"]
    state["extra.weight"] = np.zeros(3, np.float32)
    state["conv1.weight"] = np.zeros((64, 3, 3, 3), np.float32)
    with pytest.raises(WeightMismatchError) as e:
        load_canonical_model(resnet18, state)
    assert e.value.missing == ["fc.bias", "layer4.1.bn2.running_var"]
    assert e.value.unexpected == ["extra.weight"]
    assert e.value.mismatched == {"conv1.weight": ((64, 3, 7, 7), (64, 3, 3, 3))}
    assert np.array_equal(numpy(resnet18.get_layer(keras_name("conv1")).kernel), before), (
        "partial load"
    )
    with pytest.raises(WeightMismatchError, match="missing keys"):
        load_canonical_model(create_model("eca_mobilenet_v2"), export_canonical_model(resnet18))


def test_non_strict_load_tolerates_missing_and_unexpected():
    model = create_model("eca_resnet18", num_classes=10)
    state = export_canonical_model(create_model("eca_resnet18", num_classes=10))
    del state["fc.bias"]
    state["extra.weight"] = np.zeros(3, np.float32)
    load_canonical_model(model, state, strict=False)
    out = export_canonical_model(model)
    assert np.array_equal(out["layer3.1.eca.conv.weight"], state["layer3.1.eca.conv.weight"])


def test_torch_pool_matches_torch_for_odd_and_even_sizes():
    """TorchPool2D vs torch MaxPool2d(3, 2, 1) and AvgPool2d(2, 2, ceil_mode, no pad count)."""
    rng = np.random.default_rng(3)
    for size in (6, 7):
        x = rng.standard_normal((2, 4, size, size + 2), dtype=np.float32) - 2.0  # mostly < 0
        tx = torch.from_numpy(x)
        want = {
            "max": torch.nn.MaxPool2d(3, 2, 1)(tx).numpy(),
            "avg_ceil": torch.nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)(
                tx
            ).numpy(),
        }
        for mode, ref in want.items():
            pad = 1 if mode == "max" else 0
            k, s = (3, 2) if mode == "max" else (2, 2)
            for df in (CF, CL):
                layer = TorchPool2D(mode, k, s, pad, data_format=df)
                xi = x if df == CF else x.transpose(0, 2, 3, 1)
                got = numpy(layer(xi))
                assert layer.compute_output_shape(xi.shape) == got.shape
                got = got if df == CF else got.transpose(0, 3, 1, 2)
                d = max_abs(got, ref)
                assert d <= 1e-6, f"TorchPool2D {mode}/{df}/{size}: max_abs={d:.2e}"


# ---------------------------------------------------------------------------------------------
# files


def _same_weights(a: keras.Model, b: keras.Model) -> list[str]:
    sa, sb = export_canonical_model(a), export_canonical_model(b)
    return [k for k in sa if not np.array_equal(sa[k], sb[k])]


def test_weights_h5_round_trip(tmp_path):
    model = create_model("eca_resnet18", kernel_sizes=(3, 3, 5, 7), num_classes=10)
    path = tmp_path / "m.weights.h5"
    save_weights_file(model, path)
    assert sorted(os.listdir(tmp_path)) == ["m.weights.h5"], "temp file left behind"
    with pytest.raises(FileExistsError, match="overwrite"):
        save_weights_file(model, path)
    save_weights_file(model, path, overwrite=True)
    loaded = load_weights_file(path, "eca_resnet18", num_classes=10)  # k read from the file
    assert loaded.get_layer(keras_name("layer2.0.eca")).config.kernel_size == 3
    assert not _same_weights(model, loaded)
    x = image(64, seed=4)
    assert np.array_equal(keras_logits(loaded, x, CL), keras_logits(model, x, CL))
    with pytest.raises(ValueError, match="kernel sizes"):
        load_weights_file(path, "eca_resnet18", num_classes=10, kernel_sizes=(3, 5, 7, 7))
    assert load_weights_file(path, "eca_resnet18").get_layer("fc").units == 10  # from the file
    with pytest.raises(ValueError, match="does not fit"):
        load_weights_file(path, "eca_resnet18", num_classes=1000)  # fc shape differs
    with pytest.raises(ValueError, match=".weights.h5 or .keras"):
        save_weights_file(model, tmp_path / "m.h5")


def test_keras_archive_round_trip(tmp_path):
    model = create_model("ecaresnet26t", num_classes=10, data_format=CL)
    path = save_weights_file(model, tmp_path / "m.keras")
    loaded = load_weights_file(path, "ecaresnet26t")
    assert isinstance(loaded.get_layer(keras_name("layer2.0.downsample.0")), TorchPool2D)
    assert not _same_weights(model, loaded)
    x = image(65, seed=5)  # odd: the ceil-mode pooling path after reload
    assert np.array_equal(keras_logits(loaded, x, CL), keras_logits(model, x, CL))
    compiled = model.predict(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), verbose=0)
    d = max_abs(compiled, keras_logits(model, x, CL))  # tf.function / jax.jit: other op order
    assert d <= 1e-5, f"predict (compiled) vs eager: max_abs={d:.2e}"
    moved = load_weights_file(path, "ecaresnet26t", data_format=CF)  # rebuilt, weights moved
    d = max_abs(keras_logits(moved, x, CF), keras_logits(model, x, CL))
    assert d <= 1e-5, f"channels_first rebuild: max_abs={d:.2e}"
    with pytest.raises(ValueError, match="not 'ecaresnet50d'"):
        load_weights_file(path, "ecaresnet50d")
    bad = tmp_path / "bad.keras"
    bad.write_bytes(path.read_bytes()[:1000])  # truncated archive
    with pytest.raises(ValueError, match="not a readable .keras archive"):
        load_weights_file(bad, "ecaresnet26t")


def _randomize_batchnorm(model: keras.Model, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine parameters (small gamma keeps ResNet-50 logits O(1))."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.1, c).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, c).astype(np.float32))
            layer.gamma.assign((rng.uniform(0.5, 1.5, c) * 0.3).astype(np.float32))
            layer.beta.assign(rng.normal(0, 0.1, c).astype(np.float32))


@pytest.mark.parametrize("attention", ["eca", "se"])
def test_bottleneck_attention_pools_conv3_input_at_inference(attention):
    """Eval: each bottleneck's attention pools conv3's input (PooledThrough, linked by
    create_model); logits equal the attention's own pooling up to float32 rounding. Training:
    the block output's own mean, bit for bit."""
    model = create_model("eca_resnet50", data_format=CL, attention=attention)
    _randomize_batchnorm(model)
    through = [layer for layer in model.layers if isinstance(layer, PooledThrough)]
    assert len(through) == 16 and all(t._linked is not None for t in through), len(through)
    x = image(64, seed=3, batch=2)
    fast = keras_logits(model, x, CL)
    for t in through:
        t.unlink()
    slow = keras_logits(model, x, CL)
    err, scale = max_abs(fast, slow), float(np.abs(slow).max())
    assert 0 < err <= 1e-5 * scale, f"{BACKEND}/{attention}: max_abs={err:.2e} (|logit| {scale})"
    unlinked_train = keras_logits(model, x, CL, training=True)
    link_pooled_through(model)
    assert np.array_equal(keras_logits(model, x, CL, training=True), unlinked_train), attention


def test_load_model_revives_a_linked_model(tmp_path):
    """``keras.saving.load_model`` of a saved ECA-ResNet50 gives an :class:`ECAModel` whose
    bottlenecks pool through conv3 at inference, with the saved model's logits bit for bit."""
    model = create_model("eca_resnet50", num_classes=10, data_format=CL)
    _randomize_batchnorm(model)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    through = [layer for layer in loaded.layers if isinstance(layer, PooledThrough)]
    assert type(loaded).__name__ == "ECAModel" and len(through) == 16, type(loaded)
    assert all(t._linked is not None for t in through), f"{BACKEND}: revived model is unlinked"
    x = image(64, seed=4, batch=2)
    want = keras_logits(model, x, CL)
    got = keras_logits(loaded, x, CL)
    assert np.array_equal(got, want), f"{BACKEND}: revived vs saved max_abs={max_abs(got, want)}"


def test_basic_blocks_have_no_pooled_through():
    model = create_model("eca_resnet18", data_format=CL)
    assert not [layer for layer in model.layers if isinstance(layer, PooledThrough)]


# ---------------------------------------------------------------------------------------------
# train mode


@pytest.mark.parametrize("name", TRAIN_ARCHS)
def test_train_mode_matches_torch_and_steps(name):
    """Batch statistics and BN momentum as torch; then one SGD step updates every part."""
    source = source_model(name, seed=1).train()
    state = torch_io.export_canonical_model(source)
    model = create_model(name, data_format=CL)
    load_canonical_model(model, state)
    x = image(64, seed=6, batch=2)
    with torch.no_grad():
        want = source(torch.from_numpy(x)).numpy()
    got = keras_logits(model, x, CL, training=True)
    if name != "eca_mobilenet_v2":  # its classifier Dropout draws different masks
        assert_logits(f"{name}/keras-{BACKEND}/train", got, want, atol=1e-4)
    bn = "features.0.1" if name == "eca_mobilenet_v2" else "layer1.0.bn1"
    layer = model.get_layer(keras_name(bn))
    torch_bn = source.get_submodule(bn)
    d = max_abs(numpy(layer.moving_mean), torch_bn.running_mean.numpy())
    assert d <= 1e-5, f"{bn}: running_mean after one train-mode call: max_abs={d:.2e}"
    assert int(numpy(layer.num_batches_tracked)) == int(torch_bn.num_batches_tracked)
    # torch updates running_var with the unbiased batch variance; our Keras BN does the same
    d = max_abs(numpy(layer.moving_variance), torch_bn.running_var.numpy())
    assert d <= 1e-5, f"{bn}: running_var after one train-mode call: max_abs={d:.2e}"

    # one XLA compile beats eager JAX; on TF the ResNet's step runs as a tf.function, while
    # MobileNetV2's runs eagerly (tracing it costs ~12 s more than the one step it runs)
    jit, eager = BACKEND == "jax", BACKEND == "tensorflow" and name == "eca_mobilenet_v2"
    model.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=jit, run_eagerly=eager,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    before = export_canonical_model(model)
    loss = model.train_on_batch(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), np.array([1, 2]))
    assert np.isfinite(loss), f"loss {loss}"
    after = export_canonical_model(model)
    same = [k for k in before if "num_batches" not in k and np.array_equal(before[k], after[k])]
    assert not same, f"{len(same)} tensors not updated by the step: {same[:5]}"
    key = f"{bn}.num_batches_tracked"  # counted in the compiled train step too (not TF MobileNet)
    assert after[key] == before[key] + 1 and after[key].dtype == np.int64
