"""Shared test data for every backend: bad inputs (same error kind everywhere) and the
hypothesis strategy that draws ECA situations. Expected values come only from the reference."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from eca_multi.conformance.generate import round_to_dtype
from eca_multi.conformance.tolerances import compare, describe_failure

# issue 3: torchvision ResNet / MobileNetV2 parameter counts plus the ECA kernels
OFFICIAL_PARAMS = {
    "eca_resnet18": 11_689_556,
    "eca_resnet34": 21_797_744,
    "eca_resnet50": 25_557_112,
    "eca_resnet101": 44_549_317,
    "eca_resnet152": 60_193_042,
    "eca_mobilenet_v2": 3_504_897,
}

# (id, constructor kwargs, exception type, regex the message must match)
BAD_CONSTRUCTOR = [
    ("even_k", dict(channels=8, kernel_size=4), ValueError, "odd"),
    ("zero_k", dict(channels=8, kernel_size=0), ValueError, ">= 1"),
    ("negative_k", dict(channels=8, kernel_size=-3), ValueError, ">= 1"),
    ("float_k", dict(channels=8, kernel_size=3.0), TypeError, "kernel_size must be an int"),
    ("no_channels_no_k", dict(), ValueError, "channels .* or an explicit kernel_size"),
    ("bad_padding", dict(channels=8, padding="reflect"), ValueError, "padding must be one of"),
    ("bad_gate", dict(channels=8, gate="relu"), ValueError, "gate must be one of"),
    ("bad_data_format", dict(channels=8, data_format="NCHW"), ValueError, "data_format must be"),
    ("zero_channels", dict(channels=0), ValueError, "channels must be >= 1"),
    ("even_min_k", dict(channels=8, min_kernel_size=2), ValueError, "odd"),
]

# (id, constructor kwargs (channels_first), input shape, dtype, exception type, regex)
BAD_INPUTS = [
    ("rank2", dict(channels=8), (2, 8), "float32", ValueError, "rank >= 3"),
    ("rank1", dict(channels=8), (8,), "float32", ValueError, "rank >= 3"),
    (
        "channel_mismatch",
        dict(channels=8),
        (2, 6, 4, 4),
        "float32",
        ValueError,
        "built for 8 channels but the input has 6",
    ),
    ("int_input", dict(channels=8), (2, 8, 4, 4), "int32", TypeError, "floating-point"),
    ("zero_spatial", dict(channels=8), (2, 8, 0, 4), "float32", ValueError, "zero-size spatial"),
]


@st.composite
def eca_examples(draw, dtypes=("float32",)):
    """A random ECA situation: shape, layer kwargs and float64 inputs representable in dtype."""
    data_format = draw(st.sampled_from(["channels_first", "channels_last"]))
    n = draw(st.integers(1, 3))
    c = draw(st.integers(1, 40))
    spatial = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    k = draw(st.one_of(st.none(), st.sampled_from([1, 3, 5, 7, 9])))
    padding = draw(st.sampled_from(["zeros", "circular"]))
    gate = draw(st.sampled_from(["sigmoid", "hard_sigmoid"]))
    dtype = draw(st.sampled_from(list(dtypes)))
    seed = draw(st.integers(0, 2**31 - 1))
    shape = (n, c, *spatial) if data_format == "channels_first" else (n, *spatial, c)
    kwargs = dict(channels=c, kernel_size=k, padding=padding, gate=gate, data_format=data_format)
    from eca_multi import make_config

    kk = make_config(**kwargs).kernel_size
    rng = np.random.default_rng(seed)
    x = round_to_dtype(rng.standard_normal(shape) * 2, dtype)
    w = round_to_dtype(rng.uniform(-1, 1, size=(1, 1, kk)), "float32")
    g = round_to_dtype(rng.standard_normal(shape), dtype)
    return dict(shape=shape, kwargs=kwargs, x=x, w=w, g=g, dtype=dtype)


def assert_matches(backend: str, case: str, got: dict, ref: dict, dtype: str = "float32") -> None:
    """Assert y / dx / dw of ``got`` against the reference ``ref`` under the tolerance table."""
    failures = []
    for name, kind in (("y", "forward"), ("dx", "grad"), ("dw", "grad")):
        if name not in got:
            continue
        res = compare(got[name], ref[name], dtype, kind)
        if not res["ok"]:
            failures.append(describe_failure(backend, case, name, res))
    assert not failures, "\n".join(failures)


def reference_outputs(ex: dict) -> dict:
    """Reference y, dx, dw for an example drawn by :func:`eca_examples`."""
    from eca_multi import reference

    kw = {k: v for k, v in ex["kwargs"].items() if k != "kernel_size"}
    y = reference.forward(ex["x"], ex["w"], **kw)
    dx, dw = reference.backward(ex["x"], ex["w"], ex["g"], **kw)
    return {"y": y, "dx": dx, "dw": dw}


def read_through_source_file(name: str, state: dict) -> dict:
    """Save a torch state (NumPy arrays) in the architecture's real checkpoint format and read it
    back through the porting reader (content detection, weights_only loading, 'module.' strip):

    official family -> the authors' ``.pth.tar`` (torch.save of {'epoch', 'arch', 'state_dict'
    with 'module.' keys, 'best_prec1', 'optimizer'}); timm -> ``model.safetensors``.
    """
    import os
    import shutil
    import tempfile

    import torch

    from eca_multi import archs
    from eca_multi.port import read_source

    tensors = {k: torch.from_numpy(np.asarray(v, order="C")) for k, v in state.items()}
    folder = tempfile.mkdtemp(prefix="source-")
    try:
        if archs.get_arch(name).family == "timm":
            from safetensors.torch import save_file

            path = os.path.join(folder, "model.safetensors")
            save_file(tensors, path)
        else:
            path = os.path.join(folder, f"{name}_checkpoint.pth.tar")
            torch.save(
                {
                    "epoch": 90,
                    "arch": name,
                    "best_prec1": 77.4,
                    "optimizer": {},
                    "state_dict": {f"module.{k}": v for k, v in tensors.items()},
                },
                path,
            )
        canonical, info = read_source(path, name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    expected = "safetensors" if archs.get_arch(name).family == "timm" else "official"
    assert info["format"] == expected, f"{name}: detected {info['format']}, expected {expected}"
    return canonical


def run_family_example(name: str, capsys) -> str:
    """Run examples/<name> in this process; assert the formula's parameter count it prints for
    every attention kind of ECA-ResNet50; return its stdout for the caller's own checks."""
    import runpy
    from pathlib import Path

    from eca_multi import archs
    from eca_multi.family import ATTENTIONS

    path = Path(__file__).resolve().parents[1] / "examples" / name
    runpy.run_path(str(path), run_name="__main__")
    out = capsys.readouterr().out
    for kind in ATTENTIONS:
        n = archs.attention_params("eca_resnet50", kind)
        assert f"attention={kind!r:10s} +{n:>11,} parameters" in out, f"{name}: {out[-2000:]}"
    return out


def random_canonical_state(
    arch: str, num_classes: int, seed: int = 0, scale: float = 0.05, counter: int = 0
) -> dict[str, np.ndarray]:
    """Seeded random canonical weights of ``arch``: N(0, scale) tensors, running variances in
    U(0.5, 1.5), BatchNorm step counters ``counter`` (readers' and ports' tests)."""
    from eca_multi import archs

    rng = np.random.default_rng(seed)
    state = {}
    for key, (shape, _) in archs.schema(arch, num_classes).items():
        if key.endswith("num_batches_tracked"):
            state[key] = np.array(counter, np.int64)
        elif key.endswith("running_var"):
            state[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            state[key] = (scale * rng.standard_normal(shape)).astype(np.float32)
    return state
