"""Porting by hub name (``eca-multi port hf-hub:timm/...``), through huggingface_hub's own cache.

No hub is reachable here, so each test builds a real Hugging Face cache folder
(``models--timm--<repo>/{blobs, refs/main, snapshots/<commit>/...}``, symlinks into ``blobs`` as
huggingface_hub lays it out) with random timm weights (``timm.create_model`` +
``randomize_batchnorm_``, saved with ``safetensors.torch.save_file`` as timm does) and the
``config.json`` timm's own ``save_config_for_hf`` writes, and runs offline (``HF_HUB_OFFLINE=1``)
through ``hf_hub_download``'s resolution, nothing mocked.

huggingface_hub reads ``HF_HUB_CACHE`` / ``HF_HUB_OFFLINE`` once, when it is imported (timm
imports it before any test runs), so the in-process tests set the environment *and* the two
values huggingface_hub read from it (:func:`offline_cache`); the command-line tests run
``eca-multi`` in a subprocess with the environment only.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import require_backend

torch = require_backend("torch")
timm = require_backend("timm")  # before TensorFlow (Keras): timm loads triton (see conftest)
hf = require_backend("huggingface_hub")

from eca_multi import hub  # noqa: E402
from eca_multi.port import port, read_source  # noqa: E402
from eca_multi.torch.models import randomize_batchnorm_  # noqa: E402
from eca_multi.weights import load_file  # noqa: E402

ARCH = "ecaresnet26t"  # the smallest timm ECA architecture
REPO = f"timm/{ARCH}.ra2_in1k"
NAME = f"hf-hub:{REPO}"
BIN_REPO = "timm/ecaresnet26t.bin_only"  # only pytorch_model.bin (older timm uploads)
OTHER_REPO = "timm/resnet50.a1_in1k"  # a timm model that is no ECA model
COMMIT = "4f0b6c7d2a1e9f8b3c5d7e9f1a2b4c6d8e0f1a2b"
LABELS = [f"n{i:08d}" for i in range(1000)]  # label names, as timm records ImageNet synsets
_BIN = Path(sys.executable).parent  # the venv's bin: eca-multi lives beside python


def _add_repo(cache: Path, repo_id: str, files: dict[str, bytes]) -> None:
    """One repository in huggingface_hub's cache layout (eca_multi.hub.seed_cache)."""
    from eca_multi.hub import seed_cache

    seed_cache(cache, repo_id, files, COMMIT)


def _timm_config(model, tmp: Path, **model_config) -> bytes:
    from timm.models._hub import save_config_for_hf

    path = tmp / f"config-{id(model)}.json"
    save_config_for_hf(model, str(path), model_config=model_config)
    return path.read_bytes()


@pytest.fixture(scope="module")
def hub_home(tmp_path_factory):
    """HF_HOME with a hub cache holding the ECA repo (safetensors), a .bin-only ECA repo and a
    ResNet-50 repo (config.json only: the port stops before its weights)."""
    from safetensors.torch import save

    home = tmp_path_factory.mktemp("hf_home")
    scratch = tmp_path_factory.mktemp("hf_scratch")
    model = randomize_batchnorm_(timm.create_model(ARCH), seed=5, image_size=64).eval()
    config = _timm_config(model, scratch, label_names=LABELS)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    _add_repo(home / "hub", REPO, {"model.safetensors": save(state), "config.json": config})
    buf = io.BytesIO()
    torch.save(state, buf)
    _add_repo(home / "hub", BIN_REPO, {"pytorch_model.bin": buf.getvalue(), "config.json": config})
    other = timm.create_model("resnet50")
    _add_repo(home / "hub", OTHER_REPO, {"config.json": _timm_config(other, scratch)})
    return home, {k: v.numpy() for k, v in state.items()}, json.loads(config)


@pytest.fixture
def offline_cache(hub_home, monkeypatch):
    """The test's environment points huggingface_hub at the cache, offline."""
    from huggingface_hub import constants

    home = hub_home[0]
    for var, value in _hub_env(home).items():
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(constants, "HF_HOME", str(home))  # read once, at import
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return hub_home


def _hub_env(home: Path) -> dict[str, str]:
    return {"HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"), "HF_HUB_OFFLINE": "1"}


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **_hub_env(home)}
    return subprocess.run(
        [str(_BIN / "eca-multi"), *args], capture_output=True, text=True, env=env, timeout=900
    )


def _expected_cfg(config: dict) -> dict:
    """What the port records: timm's merge of config.json (pretrained_cfg + num_classes +
    label_names), plus the hub id (timm's load_model_config_from_hf adds it too)."""
    return {**config["pretrained_cfg"], "label_names": LABELS, "hf_hub_id": REPO}


# ---------------------------------------------------------------------------------------------
# resolution


def test_resolve_reads_the_architecture_and_pretrained_cfg(offline_cache):
    home, _, config = offline_cache
    model = hub.resolve(NAME)
    assert model.arch == ARCH and model.arch_from_config
    assert model.repo_id == REPO and model.revision is None
    assert model.pretrained_cfg == _expected_cfg(config)
    assert model.pretrained_cfg["input_size"] == [3, 256, 256]
    assert model.pretrained_cfg["crop_pct"] == 0.875 and model.pretrained_cfg["mean"][0] == 0.485
    path = model.weights()
    assert path.name == "model.safetensors" and COMMIT in str(path)
    assert str(path).startswith(str(home / "hub"))
    assert hub.parse_name(f"{NAME}@main") == (REPO, "main")
    with pytest.raises(hub.HubError, match="owner/repo"):
        hub.parse_name("hf-hub:a@b@c")


def test_bin_only_repository_is_read_without_running_pickled_code(offline_cache):
    _, state, _ = offline_cache
    model = hub.resolve(f"hf-hub:{BIN_REPO}")
    assert model.weights().name == "pytorch_model.bin"
    got, info = read_source(model.weights(), ARCH)
    assert info["format"] == "torch-state-dict"  # torch.load(weights_only=True)
    assert set(got) == set(state) and all(np.array_equal(got[k], state[k]) for k in state)


# ---------------------------------------------------------------------------------------------
# the Python API


def test_port_api_infers_arch_and_records_the_cfg(offline_cache, tmp_path):
    _, state, config = offline_cache
    out = tmp_path / "eca26t.safetensors"
    report = port(NAME, None, "canonical", out, progress=False)
    assert report.arch == ARCH and report.src == NAME and report.num_classes == 1000
    text = str(report)
    assert "from config.json" in text and "model.safetensors via huggingface_hub" in text
    assert "config: input 3x256x256, bicubic, crop_pct 0.875 (center)" in text
    got, meta = load_file(out)  # framework-free: the canonical file and its metadata
    assert all(np.array_equal(got[k], state[k]) for k in state)
    assert meta["source_hub"] == NAME and meta["arch"] == ARCH
    assert json.loads(meta["pretrained_cfg"]) == _expected_cfg(config)
    _, info = read_source(out, ARCH)  # read back
    assert info["pretrained_cfg"] == report.source_info["pretrained_cfg"] == _expected_cfg(config)


def test_port_api_to_torch_writes_timm_config_json(offline_cache, tmp_path):
    _, state, config = offline_cache
    folder = tmp_path / "torch_out"
    folder.mkdir()
    report = port(NAME, None, "torch", folder, progress=False)
    assert Path(report.out) == folder / "model.safetensors"
    written = json.loads((folder / "config.json").read_text())
    assert written["architecture"] == ARCH and written["num_classes"] == 1000
    assert written["label_names"] == LABELS  # top level, as timm writes it
    assert written["pretrained_cfg"] == {
        k: v for k, v in config["pretrained_cfg"].items() if k != "hf_hub_id"
    }
    _, info = read_source(report.out, ARCH)  # the safetensors metadata too
    assert info["pretrained_cfg"] == _expected_cfg(config)
    # what a timm user does with the folder: config.json + model.safetensors
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    for key in ("input_size", "interpolation", "crop_pct", "mean", "std", "num_classes"):
        want = config["pretrained_cfg"][key]
        assert list(np.atleast_1d(model.pretrained_cfg[key])) == list(np.atleast_1d(want)), key
    assert model.pretrained_cfg["label_names"] == LABELS
    sd = model.state_dict()
    assert all(np.array_equal(sd[k].numpy(), state[k]) for k in state)
    with pytest.raises(FileExistsError, match="config.json"):  # replaced only with force
        (folder / "model.safetensors").unlink()
        port(NAME, None, "torch", folder, progress=False)
    assert not (folder / "model.safetensors").exists(), "nothing written before the check"


def test_port_api_errors(offline_cache, tmp_path):
    with pytest.raises(hub.HubError, match=r"'resnet50' model .* known: .*ecaresnet26t"):
        port(f"hf-hub:{OTHER_REPO}", None, "canonical", tmp_path / "o.safetensors")
    with pytest.raises(hub.HubError, match="holds a 'ecaresnet26t' model"):
        port(NAME, "ecaresnet50d", "canonical", tmp_path / "o.safetensors")
    with pytest.raises(hub.HubNotFoundError, match="not in the local Hugging Face cache") as e:
        port("hf-hub:timm/no-such-repo", None, "canonical", tmp_path / "o.safetensors")
    assert isinstance(e.value.__cause__, hf.errors.LocalEntryNotFoundError)  # chained
    with pytest.raises(ValueError, match="architecture is required"):
        port(tmp_path / "x.safetensors", None, "canonical", tmp_path / "o.safetensors")
    assert not (tmp_path / "o.safetensors").exists()


# ---------------------------------------------------------------------------------------------
# the command line, and every target format


@pytest.mark.parametrize("to, name", [("keras", "eca26t.keras"), ("flax", "eca26t.msgpack")])
def test_cli_port_by_hub_name_with_verify(offline_cache, tmp_path, to, name):
    require_backend({"keras": "keras", "flax": "flax"}[to])
    home, _, config = offline_cache
    out = tmp_path / name
    r = _cli(home, "port", NAME, "--to", to, "-o", str(out), "--verify", "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"arch:   {ARCH} (from config.json;" in r.stdout, r.stdout
    assert "-> OK" in r.stdout and "top-1 agreement 100%" in r.stdout, r.stdout
    _, info = read_source(out, ARCH)  # read back through the target framework's reader
    assert info["pretrained_cfg"] == _expected_cfg(config)


def test_keras_weights_h5_and_ports_on_keep_the_cfg(offline_cache, tmp_path):
    require_backend("keras")
    require_backend("flax")
    _, state, config = offline_cache
    h5 = tmp_path / "eca26t.weights.h5"
    report = port(NAME, None, "keras", h5, verify=True, verify_size=64, verify_batch=1)
    assert report.verify.ok, report.verify
    _, info = read_source(h5, ARCH)
    assert info["pretrained_cfg"] == _expected_cfg(config)
    # an eca-multi output with the cfg, ported on: Keras -> Flax -> .pth.tar -> canonical .npz
    chain = [("flax", "eca26t.msgpack"), ("torch", "eca26t.pth.tar"), ("canonical", "e.npz")]
    src = h5
    for to, name in chain:
        out = tmp_path / name
        report = port(src, ARCH, to, out, progress=False)
        assert report.source_info["pretrained_cfg"] == _expected_cfg(config), (src, to)
        _, info = read_source(out, ARCH)
        assert info["pretrained_cfg"] == _expected_cfg(config), to
        src = out
    got, _ = read_source(src, ARCH)
    assert all(np.array_equal(got[k], state[k]) for k in state)  # weights untouched on the way


def test_oversized_config_json_is_refused_unread(offline_cache, tmp_path, monkeypatch):
    """A config.json bigger than any model config (1 MiB) is refused before it is parsed."""
    home = tmp_path / "hf"
    config = b'{"architecture": "ecaresnet26t", "pad": "' + b"x" * (2 << 20) + b'"}'
    _add_repo(home / "hub", "timm/huge-config", {"config.json": config})
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    with pytest.raises(hub.HubError, match=r"config.json of 2,097,1\d\d bytes, over 1,048,576"):
        hub.resolve("hf-hub:timm/huge-config")


def test_cli_errors_are_one_line_without_traceback(hub_home, tmp_path):
    home = hub_home[0]
    out = str(tmp_path / "o.safetensors")
    cases = [
        (f"hf-hub:{OTHER_REPO}", ("'resnet50' model", OTHER_REPO, "known:", ARCH)),
        ("hf-hub:timm/no-such-repo", ("not in the local Hugging Face cache", "HF_HUB_OFFLINE")),
        (f"hf-hub:{REPO}@v9", ("not in the local Hugging Face cache",)),  # no such revision
    ]
    for src, needles in cases:
        r = _cli(home, "port", src, "--to", "canonical", "-o", out)
        assert r.returncode == 2, (src, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.stderr.startswith("eca-multi port: "), r.stderr
        for needle in needles:
            assert needle in r.stderr, (needle, r.stderr)
    r = _cli(home, "port", str(tmp_path / "x.safetensors"), "--to", "canonical", "-o", out)
    assert r.returncode == 2 and "architecture is required" in r.stderr, r.stderr
    assert not os.path.exists(out)
