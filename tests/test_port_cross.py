"""Porting across frameworks: official and timm checkpoints into Keras 3 and Flax (verified on
real-size inputs), our Keras / Flax files as sources, and the round trip
torch -> canonical -> keras -> canonical -> flax -> canonical -> torch, bit for bit.

Small models keep CI time low (eca_resnet18, ecaresnet26t); the per-architecture logit checks of
every model live in the Keras and Flax model tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import require_backend

torch = require_backend("torch")
timm = require_backend("timm")  # before TensorFlow (Keras): timm loads triton (see conftest)
require_backend("keras")
require_backend("flax")

from eca_multi.port import detect_format, load_model, port, read_source  # noqa: E402
from eca_multi.torch.io import export_canonical_model  # noqa: E402
from eca_multi.torch.models import create_model, randomize_batchnorm_  # noqa: E402
from eca_multi.weights.sources import SourceError  # noqa: E402

ARCH, TIMM_ARCH = "eca_resnet18", "ecaresnet26t"
TOL = 1e-4  # the max abs logit difference
_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cross")


@pytest.fixture(scope="module")
def official(workdir):
    """Our torch eca_resnet18 with random non-trivial BatchNorm, in the official .pth.tar layout."""
    model = randomize_batchnorm_(create_model(ARCH), seed=21, image_size=64).eval()
    path = workdir / "eca_resnet18_k3577.pth.tar"
    torch.save(
        {
            "epoch": 99,
            "arch": ARCH,
            "best_prec1": 70.0,
            "optimizer": {},
            "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
        },
        path,
    )
    return path, export_canonical_model(model)


@pytest.fixture(scope="module")
def timm_file(workdir):
    model = randomize_batchnorm_(timm.create_model(TIMM_ARCH, pretrained=False), seed=22).eval()
    from safetensors.torch import save_file

    path = workdir / "model.safetensors"  # what timm's hub repositories hold
    save_file(model.state_dict(), str(path))
    return path


@pytest.mark.parametrize("to, name", [("keras", "r18.weights.h5"), ("flax", "r18.msgpack")])
def test_official_checkpoint_to_keras_and_flax(official, workdir, to, name):
    report = port(
        official[0], ARCH, to, workdir / name, verify=True, verify_batch=1, progress=False
    )
    v = report.verify
    assert v.ok and v.max_abs <= TOL, f"{ARCH} official -> {to}: max_abs={v.max_abs:.2e}"
    assert v.batch_shape == (1, 3, 224, 224) and v.top5_agreement == 1.0
    assert detect_format(workdir / name) == {"keras": "keras-weights", "flax": "flax"}[to]


@pytest.mark.parametrize("to, name", [("keras", "26t.keras"), ("flax", "26t.msgpack")])
def test_timm_safetensors_to_keras_and_flax_at_odd_size(timm_file, workdir, to, name):
    """225x225 takes timm's ceil-mode, count_include_pad=False average-pool downsample path."""
    report = port(
        timm_file,
        TIMM_ARCH,
        to,
        workdir / name,
        verify=True,
        verify_size=225,
        verify_batch=1,
        progress=False,
    )
    v = report.verify
    assert v.ok and v.max_abs <= TOL, f"{TIMM_ARCH} timm -> {to} at 225: max_abs={v.max_abs:.2e}"


def test_keras_and_flax_files_back_to_timm(timm_file, workdir):
    """A Keras / Flax export becomes a model.safetensors that timm loads with strict=True."""
    from safetensors.torch import load_file

    want = read_source(timm_file, TIMM_ARCH)[0]
    for src in ("26t.keras", "26t.msgpack"):
        if not (workdir / src).exists():
            port(
                timm_file,
                TIMM_ARCH,
                "keras" if src.endswith(".keras") else "flax",
                workdir / src,
                progress=False,
            )
        out = workdir / f"back_{src}" / "model.safetensors"
        out.parent.mkdir()
        port(workdir / src, TIMM_ARCH, "torch", out, progress=False)
        sd = load_file(str(out))
        timm.create_model(TIMM_ARCH, pretrained=False).load_state_dict(sd, strict=True)
        for k, v in want.items():
            if not k.endswith("num_batches_tracked"):
                assert np.array_equal(sd[k].numpy(), v), f"{src}: {k} changed"


def test_round_trip_through_every_framework_is_bit_identical(official, workdir):
    """torch -> canonical -> keras -> canonical -> flax -> canonical -> torch."""
    src, want = official
    d = workdir / "chain"
    d.mkdir()
    steps = [
        ("canonical", "c1.safetensors"),
        ("keras", "k.weights.h5"),
        ("canonical", "c2.safetensors"),
        ("flax", "f.msgpack"),
        ("canonical", "c3.npz"),
        ("torch", "t.pth"),
    ]
    for to, name in steps:
        port(src, ARCH, to, d / name, progress=False)
        src = d / name
    got, info = read_source(src, ARCH)
    assert info["format"] == "torch-state-dict" and list(got) == list(want)
    bad = [k for k in want if got[k].dtype != want[k].dtype or not np.array_equal(got[k], want[k])]
    assert not bad, f"{len(bad)} tensors changed on the round trip, e.g. {bad[:5]}"


def test_keras_channels_first_file_is_a_source(workdir):
    """A Keras model built channels_first exports the same canonical weights (layout-free file)."""
    from eca_multi.keras import io as km

    keras_model = km.create_model(ARCH, num_classes=10, data_format="channels_first")
    path = km.save_weights_file(keras_model, workdir / "cf.weights.h5")
    report = port(
        path, ARCH, "torch", workdir / "cf.pth", verify=True, verify_batch=1, progress=False
    )
    assert report.source_format == "keras-weights" and report.verify.max_abs <= TOL, report
    framework, model = load_model(path, ARCH)
    assert framework == "keras"


def test_keras_and_flax_kernel_sizes_are_checked(workdir):
    from eca_multi.flax import io as fm

    model = fm.create_model(ARCH, num_classes=10, kernel_sizes=(3, 3, 3, 3))
    path = fm.save_weights_file(model, workdir / "k3.msgpack")
    with pytest.raises(
        ValueError,
        match=r"\(3, 3, 3, 3\) but eca_resnet18 is configured with "
        r"\(3, 5, 7, 7\)",
    ):
        read_source(path, ARCH)
    state, info = read_source(path, ARCH, kernel_sizes="checkpoint")
    assert info["kernel_sizes"] == (3, 3, 3, 3) and state["layer4.1.eca.conv.weight"].shape == (
        1,
        1,
        3,
    )


@pytest.mark.parametrize("name", ["r18.weights.h5", "r18.msgpack"])
def test_truncated_keras_and_flax_files(official, workdir, tmp_path, name):
    if not (workdir / name).exists():
        port(
            official[0],
            ARCH,
            "keras" if name.endswith(".h5") else "flax",
            workdir / name,
            progress=False,
        )
    data = (workdir / name).read_bytes()
    bad = tmp_path / name
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError) as e:
        read_source(bad, ARCH)
    assert str(bad) in str(e.value) and "Traceback" not in str(e.value)


def test_cli_port_to_keras_with_verify(official, workdir):
    out = workdir / "cli.weights.h5"
    r = subprocess.run(
        [sys.executable, "-m", "eca_multi.cli", "port", str(official[0]), "--arch", ARCH, "--to",
         "keras", "-o", str(out), "--verify"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verify: torch vs keras" in r.stdout and "-> OK" in r.stdout, r.stdout
    assert detect_format(out) == "keras-weights"


@pytest.mark.parametrize(
    "script", ["port_official_example.py", "port_timm_example.py", "port_hub_example.py"]
)
def test_examples_run(script, tmp_path):
    r = subprocess.run(
        [sys.executable, str(_ROOT / "examples" / script), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("-> OK") == 2, r.stdout
