"""Porting pipeline, torch side: source formats detected by content, unsafe and damaged files,
strict key checks, atomic outputs and --force, the ``eca-multi port`` / ``eca-multi models``
commands. (Ports into Keras and Flax: tests/test_port_cross.py.)"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from conftest import require_backend

torch = require_backend("torch")

from eca_multi import cli  # noqa: E402
from eca_multi import port as port_mod  # noqa: E402
from eca_multi.port import (  # noqa: E402
    VerificationError,
    detect_format,
    parse_kernel_sizes,
    port,
    read_source,
)
from eca_multi.torch.io import export_canonical_model  # noqa: E402
from eca_multi.torch.models import create_model, randomize_batchnorm_  # noqa: E402
from eca_multi.weights import WeightMismatchError, save_file  # noqa: E402
from eca_multi.weights.sources import SourceError  # noqa: E402

ARCH = "eca_resnet18"  # the smallest ResNet keeps CI time low


@pytest.fixture(scope="module")
def model():
    return randomize_batchnorm_(create_model(ARCH), seed=11, image_size=64).eval()


@pytest.fixture(scope="module")
def files(model, tmp_path_factory):
    """One model written in every torch-side format, under misleading names where useful."""
    d = tmp_path_factory.mktemp("sources")
    sd = model.state_dict()
    official = {
        "epoch": 3,
        "arch": ARCH,
        "state_dict": {f"module.{k}": v for k, v in sd.items()},
        "best_prec1": torch.tensor(70.5),
        "optimizer": {"state": {}, "param_groups": []},
    }
    torch.save(official, d / "official.pth.tar")  # a torch zip named .pth.tar (no tar)
    torch.save(official, d / "legacy.pth.tar", _use_new_zipfile_serialization=False)
    torch.save(sd, d / "bare.pth")
    torch.save(sd, d / "bare_named_tar.pth.tar")  # content wins over the name
    state = export_canonical_model(model)
    save_file(d / "canonical.safetensors", state, {"source": "test"})
    save_file(d / "canonical.npz", state)
    from safetensors.torch import save_file as st_save

    st_save(dict(sd), str(d / "timm_style.bin"))  # a plain safetensors state_dict, odd suffix
    return d


# ---------------------------------------------------------------------------------------------
# format detection


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("official.pth.tar", "official"),
        ("legacy.pth.tar", "official"),
        ("bare.pth", "torch-state-dict"),
        ("bare_named_tar.pth.tar", "torch-state-dict"),
        ("canonical.safetensors", "safetensors"),
        ("canonical.npz", "npz"),
        ("timm_style.bin", "safetensors"),
    ],
)
def test_detect_format_by_content(files, name, fmt):
    assert detect_format(files / name) == fmt


def test_detect_format_of_keras_and_flax_files_without_those_frameworks(tmp_path):
    h5py = require_backend("h5py")
    with h5py.File(tmp_path / "m.weights.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(2))
    (tmp_path / "m.h5bin").write_bytes((tmp_path / "m.weights.h5").read_bytes())
    with zipfile.ZipFile(tmp_path / "m.keras", "w") as z:
        z.writestr("config.json", "{}")
        z.writestr("metadata.json", "{}")
        z.writestr("model.weights.h5", b"")
    # our Flax export: a msgpack map whose first entry is {"format": "eca-multi-flax-nnx"}
    (tmp_path / "m.msgpack").write_bytes(b"\x84\xa6format\xb2eca-multi-flax-nnx\xa4arch")
    assert detect_format(tmp_path / "m.weights.h5") == "keras-weights"
    assert detect_format(tmp_path / "m.h5bin") == "keras-weights"
    assert detect_format(tmp_path / "m.keras") == "keras-archive"
    assert detect_format(tmp_path / "m.msgpack") == "flax"


def test_read_every_torch_side_format_gives_the_same_state(files, model):
    want = export_canonical_model(model)
    for name in (
        "official.pth.tar",
        "legacy.pth.tar",
        "bare.pth",
        "canonical.safetensors",
        "canonical.npz",
        "timm_style.bin",
    ):
        state, info = read_source(files / name, ARCH)
        assert list(state) == list(want), name
        for k, v in want.items():
            assert np.array_equal(state[k], v) and state[k].dtype == v.dtype, f"{name}: {k}"
        assert info["framework"] == "torch" and info["kernel_sizes"] == (3, 5, 7, 7)
    _, info = read_source(files / "canonical.safetensors", ARCH)
    assert info["canonical"] and info["metadata"]["source"] == "test"


# ---------------------------------------------------------------------------------------------
# safety and damaged files


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["raw-pickle", "torch-zip", "inside-state-dict"])
def test_malicious_pickle_is_refused_and_never_run(tmp_path, how):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth.tar"
    if how == "raw-pickle":
        path.write_bytes(pickle.dumps({"state_dict": _Evil(marker)}, protocol=2))
    elif how == "torch-zip":
        torch.save({"epoch": 1, "state_dict": {"x": _Evil(marker)}}, path)
    else:
        torch.save({"conv1.weight": torch.zeros(1), "evil": _Evil(marker)}, path)
    assert not marker.exists()
    for call in (
        lambda: detect_format(path),
        lambda: read_source(path, ARCH),
        lambda: port(path, ARCH, "canonical", tmp_path / "o.safetensors"),
    ):
        with pytest.raises(SourceError, match="refused to load.*nothing in it was executed"):
            call()
    assert not marker.exists(), "the pickle's code ran"
    assert not (tmp_path / "o.safetensors").exists()


def _truncate(src, dst, fraction=0.5):
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


@pytest.mark.parametrize(
    "name, match",
    [
        ("official.pth.tar", "truncated or corrupt zip container"),
        ("legacy.pth.tar", "truncated or corrupt torch file"),
        ("canonical.safetensors", "truncated or corrupt safetensors file"),
        ("canonical.npz", "truncated or corrupt zip container"),
    ],
)
def test_truncated_files_give_a_clear_error(files, tmp_path, name, match):
    path = _truncate(files / name, tmp_path / name)
    with pytest.raises(SourceError, match=match) as e:
        read_source(path, ARCH)
    assert str(path) in str(e.value)


def test_corrupt_and_unknown_files(files, tmp_path):
    damaged = bytearray((files / "official.pth.tar").read_bytes())
    damaged[len(damaged) // 3 : len(damaged) // 3 + 4096] = os.urandom(4096)  # inside the data
    (tmp_path / "damaged.pth.tar").write_bytes(bytes(damaged))
    with pytest.raises(SourceError, match=r"damaged\.pth\.tar"):
        read_source(tmp_path / "damaged.pth.tar", ARCH)
    (tmp_path / "junk.pth").write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(SourceError, match="unrecognised weight file.*official"):
        detect_format(tmp_path / "junk.pth")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(SourceError, match="is empty"):
        detect_format(tmp_path / "empty.safetensors")
    with pytest.raises(FileNotFoundError):
        read_source(tmp_path / "missing.pth", ARCH)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(SourceError, match="without a state_dict"):
        read_source(tmp_path / "list.pth", ARCH)


def test_every_key_problem_in_one_error(model, tmp_path):
    sd = dict(model.state_dict())
    del sd["fc.weight"], sd["layer3.1.bn2.bias"]
    sd["head.weight"] = torch.zeros(3)
    sd["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(WeightMismatchError) as e:
        read_source(tmp_path / "bad.pth", ARCH, num_classes=1000)
    msg = str(e.value)
    for part in (
        "missing keys (2): fc.weight, layer3.1.bn2.bias",
        "unexpected keys (1): head",
        "layer1.0.conv1.weight: expected (64, 64, 3, 3), got (64, 64, 1, 1)",
    ):
        assert part in msg, f"{part!r} not in:\n{msg}"
    assert "bad.pth" in msg


def test_old_checkpoints_without_batch_counters(model, tmp_path):
    sd = {k: v for k, v in model.state_dict().items() if "num_batches_tracked" not in k}
    torch.save({"state_dict": sd, "epoch": 1}, tmp_path / "old.pth.tar")  # torch < 0.4.1 style
    state, info = read_source(tmp_path / "old.pth.tar", ARCH)
    assert info["filled_num_batches_tracked"] == 20 and state["bn1.num_batches_tracked"] == 0


# ---------------------------------------------------------------------------------------------
# port(): outputs, atomic writes, --force, verification


@pytest.mark.parametrize(
    "to, name, fmt",
    [
        ("canonical", "out.safetensors", "safetensors"),
        ("canonical", "out.npz", "npz"),
        ("torch", "out.pth", "torch-state-dict"),
        ("torch", "out.pth.tar", "official"),
    ],
)
def test_port_torch_side_targets(files, model, tmp_path, to, name, fmt):
    out = tmp_path / name
    report = port(files / "official.pth.tar", ARCH, to, out, progress=False)
    assert report.source_format == "official" and report.tensors == 130
    assert detect_format(out) == fmt
    state, info = read_source(out, ARCH)
    want = export_canonical_model(model)
    assert all(np.array_equal(state[k], v) for k, v in want.items()) and len(state) == len(want)
    if fmt == "official":  # the authors' layout: DataParallel keys and the metadata fields
        raw = torch.load(out, weights_only=True)
        fields = {"epoch", "arch", "state_dict", "best_prec1", "optimizer"}
        assert set(raw) == fields | {"eca_multi_sha256"}, set(raw)  # + the tensors' digest
        assert info["integrity"] == "sha256 verified", info
        assert all(k.startswith("module.") for k in raw["state_dict"]) and raw["epoch"] == 3
    assert os.listdir(tmp_path) == [name], "temp files left behind"


def test_port_timm_arch_to_model_safetensors_loads_in_timm(tmp_path):
    timm = require_backend("timm")
    src = randomize_batchnorm_(timm.create_model("ecaresnet26t", num_classes=10), seed=2).eval()
    from safetensors.torch import save_file as st_save

    st_save(src.state_dict(), str(tmp_path / "model.safetensors"))
    (tmp_path / "out").mkdir()
    report = port(
        tmp_path / "model.safetensors",
        "ecaresnet26t",
        "torch",
        tmp_path / "out",
        verify=True,
        verify_size=225,
        verify_batch=1,
        progress=False,
    )
    assert report.out.endswith("out/model.safetensors") and report.num_classes == 10
    assert report.verify.max_abs == 0.0, report.verify  # torch -> torch: bit-identical
    dst = timm.create_model("ecaresnet26t", num_classes=10)
    from safetensors.torch import load_file

    dst.load_state_dict(load_file(report.out), strict=True)


def test_existing_output_needs_force_and_writes_are_atomic(files, tmp_path, monkeypatch):
    out = tmp_path / "o.safetensors"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="--force"):
        port(files / "bare.pth", ARCH, "canonical", out, progress=False)
    assert out.read_bytes() == b"precious"
    port(files / "bare.pth", ARCH, "canonical", out, force=True, progress=False)
    assert detect_format(out) == "safetensors"

    def boom(*args, **kwargs):
        raise OSError("disk full")

    target = tmp_path / "t.pth"
    target.write_bytes(b"old")
    monkeypatch.setattr(os, "replace", boom)  # the final rename fails: the temp file must go
    with pytest.raises(OSError, match="disk full"):
        port(files / "bare.pth", ARCH, "torch", target, force=True, progress=False)
    assert target.read_bytes() == b"old", "a failed port must leave the old file untouched"
    assert sorted(os.listdir(tmp_path)) == ["o.safetensors", "t.pth"], "temp files left behind"


def test_verify_failure_raises_with_the_numbers(files, tmp_path, monkeypatch):
    calls = iter(range(100))  # source and target get different "logits"
    monkeypatch.setattr(
        port_mod,
        "_logits",
        lambda fw, m, x: np.random.default_rng(next(calls)).standard_normal((x.shape[0], 1000)),
    )
    with pytest.raises(
        VerificationError, match=r"max abs logit difference .* > tolerance 1e-04"
    ) as e:
        port(
            files / "bare.pth",
            ARCH,
            "canonical",
            tmp_path / "o.safetensors",
            verify=True,
            progress=False,
        )
    assert not e.value.report.verify.ok and "FAILED" in str(e.value.report)
    monkeypatch.setattr(sys, "argv", ["eca-multi"])
    rc = cli.main(
        [
            "port",
            str(files / "bare.pth"),
            "--arch",
            ARCH,
            "--to",
            "canonical",
            "-o",
            str(tmp_path / "o2.safetensors"),
            "--verify",
            "--no-progress",
        ]
    )
    assert rc == 1


def test_parse_kernel_sizes():
    assert parse_kernel_sizes(None, ARCH) is None
    assert parse_kernel_sizes("checkpoint", ARCH) == "checkpoint"
    assert parse_kernel_sizes("3,3,5,7", ARCH) == (3, 3, 5, 7)
    mnv2 = parse_kernel_sizes(",".join(["3"] * 17), "eca_mobilenet_v2")
    assert mnv2 == dict.fromkeys(range(1, 18), 3)
    with pytest.raises(ValueError, match="takes 4 kernel sizes, got 3"):
        parse_kernel_sizes("3,5,7", ARCH)
    with pytest.raises(ValueError, match="comma-separated integers"):
        parse_kernel_sizes("3;5", ARCH)


# ---------------------------------------------------------------------------------------------
# the command line


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "eca_multi.cli", *args], capture_output=True, text=True, timeout=600
    )


def test_cli_port_to_canonical_with_verify(files, tmp_path):
    out = tmp_path / "r18.safetensors"
    args = (
        "port",
        str(files / "official.pth.tar"),
        "--arch",
        ARCH,
        "--to",
        "canonical",
        "-o",
        str(out),
        "--verify",
    )
    r = _cli(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "official, epoch=3, arch=eca_resnet18" in r.stdout
    assert "max abs logit difference 0.000e+00" in r.stdout and "top-5 agreement 100%" in r.stdout
    assert "130/130 tensors" in r.stderr  # the progress bar
    r = _cli(*args)
    assert r.returncode == 2 and "exists" in r.stderr and "--force" in r.stderr, r.stderr
    r = _cli(*args, "--force", "--no-progress")
    assert r.returncode == 0 and "tensors" not in r.stderr, r.stdout + r.stderr


def test_cli_kernel_sizes_option(model, tmp_path):
    k3 = create_model(ARCH, kernel_sizes=(3, 3, 3, 3))
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in k3.state_dict().items()}},
        tmp_path / "k3.pth.tar",
    )
    base = ("port", str(tmp_path / "k3.pth.tar"), "--arch", ARCH, "--to", "torch", "--no-progress")
    r = _cli(*base, "-o", str(tmp_path / "a.pth"))
    assert r.returncode == 2 and "--kernel-sizes checkpoint" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    r = _cli(*base, "-o", str(tmp_path / "a.pth"), "--kernel-sizes", "checkpoint")
    assert r.returncode == 0 and "ECA kernel sizes 3,3,3,3" in r.stdout, r.stdout + r.stderr
    r = _cli(*base, "-o", str(tmp_path / "b.pth"), "--kernel-sizes", "3,3,3,3")
    assert r.returncode == 0, r.stderr


def test_cli_reports_bad_sources_without_traceback(tmp_path):
    (tmp_path / "bad.pth.tar").write_bytes(b"PK\x03\x04 truncated")
    r = _cli(
        "port",
        str(tmp_path / "bad.pth.tar"),
        "--arch",
        ARCH,
        "--to",
        "canonical",
        "-o",
        str(tmp_path / "o.safetensors"),
    )
    assert r.returncode == 2 and "truncated or corrupt zip" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    r = _cli(
        "port",
        str(tmp_path / "bad.pth.tar"),
        "--arch",
        "resnet50",
        "--to",
        "canonical",
        "-o",
        str(tmp_path / "o.safetensors"),
    )
    assert r.returncode == 2 and "unknown architecture 'resnet50'" in r.stderr, r.stderr


def test_cli_models_lists_architectures_k_and_params():
    r = _cli("models")
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines()[1:]}
    assert set(lines) == set(port_mod.archs.ARCHS)
    assert "3,5,5,7 per stage (published)" in lines["eca_resnet50"]
    assert lines["eca_resnet50"].endswith("25,557,112")
    assert lines["eca_resnet152"].endswith("60,193,042")
    assert "k=1 if out channels <= 96 else k=3" in lines["eca_mobilenet_v2"]
    assert lines["eca_mobilenet_v2"].endswith("3,504,897")
    assert "timm rule, min 3" in lines["ecaresnet50d"] and "timm" in lines["ecaresnet50d"]


def test_port_and_sources_import_no_framework():
    """`eca-multi models`, format sniffing and the port module stay framework-free until used."""
    code = (
        "import sys, eca_multi.port, eca_multi.weights.sources\n"
        "eca_multi.port.models_table()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'tensorflow', 'jax', 'flax', 'keras', 'safetensors', 'timm'))\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported frameworks: {out.stdout.strip()}"
