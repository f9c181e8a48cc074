"""timm's newer ECA models (eca_multi.graph): NFNet-L0/1/2, eca_resnet33ts, eca_resnext26ts and
the pruned ECA-ResNet-Ds, against timm 1.0.31 (the oracle) in every framework.

For each architecture timm's model gets random, well-conditioned weights (calibrated BatchNorm
statistics, random ScaledStdConv gains and biases; the float64 twin agrees with float32), is saved
as timm saves it (``model.safetensors``) and ported to Keras on each of its three backends and to
Flax, each in its own process (tests/graph_port_worker.py): every architecture on Flax and on at
least one Keras backend, every builder on all three (TARGET_ARCHS says why). The ported files,
loaded back, give timm's logits within 1e-4 max abs at timm's default input size (eager) and at an
odd size (Keras runs the other data format there, compiled on TensorFlow and JAX:
tests/graph_port_worker.py says why), and their weights come back to a file timm loads with
``strict=True``, bit for bit. Parameter counts equal timm's everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import require_backend

torch = require_backend("torch")
timm = require_backend("timm")
require_backend("keras")
require_backend("flax")

from eca_multi import archs, graph  # noqa: E402
from eca_multi.port import models_table, port  # noqa: E402
from eca_multi.torch.models import randomize_batchnorm_  # noqa: E402

ARCHS = [
    "eca_nfnet_l0",
    "eca_nfnet_l1",
    "eca_nfnet_l2",
    "eca_resnet33ts",
    "eca_resnext26ts",
    "ecaresnet50d_pruned",
    "ecaresnet101d_pruned",
]
ODD = 161  # an odd side: every stride-2 stage sees an odd size (161, 81, 41, 21, 11)
TOL = 1e-4  # the max abs logit difference
TWIN_TOL = 5e-5  # timm float32 vs float64 on these weights (measured <= 2.1e-5): not chaotic
# longest first: the port workers run two at a time
TARGETS = ["keras-jax", "flax", "keras-torch", "keras-tensorflow"]
# Every architecture runs on Flax and on at least one Keras backend, and every builder on every
# Keras backend: NFNet-L1/L2 are NFNet-L0's builder at other widths and depths, and
# ecaresnet101d_pruned is ecaresnet50d_pruned's with more blocks. The Keras model code is
# backend-independent, so a deeper twin on a second and third Keras backend tests no new op (each
# backend still runs every layer kind these models hold, at both input sizes); each twin goes
# where it is cheapest (NFNets on JAX, the pruned ResNet-101 on torch). Running all seven on every
# Keras backend doubled this file's CPU time (per-architecture times: the worker logs).
PER_BUILDER = ["eca_nfnet_l0", "eca_resnet33ts", "eca_resnext26ts", "ecaresnet50d_pruned"]
TARGET_ARCHS = {
    "keras-jax": PER_BUILDER + ["eca_nfnet_l1", "eca_nfnet_l2"],
    "keras-torch": PER_BUILDER + ["ecaresnet101d_pruned"],
    "keras-tensorflow": PER_BUILDER,
    "flax": ARCHS,
}
ROOT = Path(__file__).resolve().parent.parent


def _timm_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """timm models with random weights, their files, inputs and float32 / float64 logits."""
    root = tmp_path_factory.mktemp("graph")
    from safetensors.torch import save_file

    out = {}
    for seed, name in enumerate(ARCHS):
        torch.manual_seed(seed)  # timm's own init draws from the global generator
        model = timm.create_model(name, pretrained=False)
        randomize_batchnorm_(model, seed=100 + seed, name=name, image_size=64)
        d = root / name
        d.mkdir()
        save_file(model.state_dict(), str(d / "model.safetensors"))
        default = model.pretrained_cfg["input_size"][-1]
        logits = {}
        rng = np.random.default_rng(seed)
        for size in (default, ODD):
            x = rng.standard_normal((1, 3, size, size)).astype(np.float32)
            np.save(d / f"x{size}.npy", x)
            with torch.no_grad():
                y32 = model(torch.from_numpy(x)).double().numpy()
                y64 = model.double()(torch.from_numpy(x).double()).numpy()
                model.float()
            logits[size] = (y32, y64)
        out[name] = {
            "dir": d,
            "sizes": [default, ODD],
            "logits": logits,
            "params": _timm_params(model),
            "state": {k: v.numpy().copy() for k, v in model.state_dict().items()},
        }
    return root, out


def _run_workers(root: Path, oracle: dict) -> dict[str, str]:
    """Each target in its own process, two at a time (one Keras backend per process)."""
    procs, logs = {}, {}
    pending, started = list(TARGETS), time.monotonic()
    while pending or procs:
        while pending and len(procs) < 2:
            target = pending.pop(0)
            kind, _, backend = target.partition("-")
            path = root / f"job-{target}.json"
            names = TARGET_ARCHS[target]
            job = {"dir": str(root), "archs": {n: {"sizes": oracle[n]["sizes"]} for n in names}}
            path.write_text(json.dumps({**job, "target": kind}))
            env = {**os.environ, "KERAS_BACKEND": backend or "jax"}
            log = open(root / f"{target}.log", "w")  # noqa: SIM115 (closed below)
            cmd = [sys.executable, str(ROOT / "tests" / "graph_port_worker.py"), str(path)]
            procs[target] = (subprocess.Popen(cmd, env=env, stdout=log, stderr=log), log)
        for target, (p, log) in list(procs.items()):
            if p.poll() is not None:
                log.close()
                text = (root / f"{target}.log").read_text()
                logs[target] = "ok" if p.returncode == 0 else text[-3000:]
                del procs[target]
                done = [ln for ln in text.splitlines() if " done in " in ln]
                print(f"{target}: {time.monotonic() - started:.0f} s since the start; {done}")
        if procs:  # poll: whichever finishes first frees its slot for the next target
            if time.monotonic() - started > 3600:
                for p, _ in procs.values():
                    p.kill()
                raise RuntimeError(f"graph port workers still running after an hour: {list(procs)}")
            time.sleep(0.5)
    return logs


@pytest.fixture(scope="module")
def ported(oracle):
    root, out = oracle
    return _run_workers(root, out)


def test_every_architecture_and_builder_is_ported_where_promised():
    keras_targets = [t for t in TARGETS if t.startswith("keras-")]
    assert TARGET_ARCHS["flax"] == ARCHS, "Flax must port every architecture"
    nowhere = [n for n in ARCHS if not any(n in TARGET_ARCHS[t] for t in keras_targets)]
    assert not nowhere, f"on no Keras backend: {nowhere}"
    builders = {n: type(archs.get_arch(n)).__name__ for n in ARCHS}
    for t in keras_targets:
        missing = set(builders.values()) - {builders[n] for n in TARGET_ARCHS[t]}
        assert not missing, f"{t}: no architecture of builder(s) {sorted(missing)}"


def test_schema_is_timms_state_dict():
    """Names, order and shapes of every new architecture's schema are timm's state_dict."""
    for name in ARCHS:
        sd = timm.create_model(name, pretrained=False).state_dict()
        schema = archs.schema(name)
        assert list(schema) == list(sd), f"{name}: schema keys differ from timm's state_dict"
        bad = {k: (schema[k][0], tuple(v.shape)) for k, v in sd.items() if schema[k][0] != v.shape}
        assert not bad, f"{name}: shapes differ from timm's: {list(bad.items())[:5]}"


def test_models_table_lists_them_with_timms_param_counts():
    table = models_table()
    for name in ARCHS:
        row = next(line for line in table.splitlines() if line.startswith(name + " "))
        n = _timm_params(timm.create_model(name, pretrained=False))
        assert row.endswith(f"{n:,}"), f"{name}: `eca-multi models` row {row!r}, timm {n:,}"
        ks = [b.k for b in archs.get_arch(name).blocks()]
        model = timm.create_model(name, pretrained=False)
        want = [m.conv.kernel_size[0] for m in model.modules() if type(m).__name__ == "EcaModule"]
        assert ks == want, f"{name}: ECA kernel sizes {ks} != timm's {want}"


def test_pruned_widths_are_timms_files():
    """The shipped width tables are timm's own pruned-model files (no drift)."""
    for name in ("ecaresnet50d_pruned", "ecaresnet101d_pruned"):
        ours = (ROOT / "eca_multi" / "data" / f"{name}.txt").read_text()
        theirs = (Path(timm.__file__).parent / "models" / "_pruned" / f"{name}.txt").read_text()
        assert graph.read_pruned_table(ours) == graph.read_pruned_table(theirs), name


def test_float64_twin_agrees(oracle):
    """The random weights are well-conditioned: timm float32 equals float64 closely."""
    _, out = oracle
    for name, o in out.items():
        for size, (y32, y64) in o["logits"].items():
            d = float(np.abs(y32 - y64).max())
            spread = float(y64.std())
            print(f"{name} at {size}: float32 vs float64 {d:.2e}, logit spread {spread:.2f}")
            assert d <= TWIN_TOL, f"{name} at {size}: float32 vs float64 {d:.2e} > {TWIN_TOL:.0e}"
            assert 0.3 < spread < 10, f"{name} at {size}: logit spread {spread:.2f} (degenerate)"


@pytest.mark.parametrize("target", TARGETS)
def test_ported_logits_match_timm(oracle, ported, target):
    root, out = oracle
    assert ported[target] == "ok", f"{target} worker failed:\n{ported[target]}"
    failures = []
    for name in TARGET_ARCHS[target]:
        o = out[name]
        d = root / name / target
        result = json.loads((d / "result.json").read_text())
        for size, (y32, y64) in o["logits"].items():
            got = np.load(d / f"logits{size}.npy")
            err, err64 = float(np.abs(got - y32).max()), float(np.abs(got - y64).max())
            line = (
                f"{target}/{name} at {size} ({result['formats'][str(size)]}): max abs "
                f"{err:.2e} vs timm float32, {err64:.2e} vs float64 (tol {TOL:.0e})"
            )
            print(line)
            if not err <= TOL:
                failures.append(line)
        if result["params"] != o["params"]:
            failures.append(f"{target}/{name}: {result['params']:,} params, timm {o['params']:,}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("target", TARGETS)
def test_round_trip_back_to_timm_is_bit_identical(oracle, ported, target, tmp_path):
    """The ported file -> canonical (in the worker) -> torch: timm loads it strictly, same bits."""
    from safetensors.torch import load_file

    root, out = oracle
    assert ported[target] == "ok", f"{target} worker failed:\n{ported[target]}"
    for name in TARGET_ARCHS[target]:
        o = out[name]
        dst = tmp_path / name / "model.safetensors"
        dst.parent.mkdir()
        port(root / name / target / "canonical.safetensors", name, "torch", dst, progress=False)
        sd = load_file(str(dst))
        timm.create_model(name, pretrained=False).load_state_dict(sd, strict=True)
        changed = [k for k, v in o["state"].items() if not np.array_equal(sd[k].numpy(), v)]
        assert not changed, f"{target}/{name}: {len(changed)} tensors changed, e.g. {changed[:3]}"


def test_other_attention_is_refused_clearly():
    with pytest.raises(ValueError, match="only timm's own ECA"):
        archs.schema("eca_nfnet_l0", attention="se")


def test_pruned_widths_are_checked():
    arch = archs.get_arch("ecaresnet50d_pruned")
    table = dict(arch.shapes)
    table["layer1.0.conv2.weight"] = (18, 40, 3, 3)  # takes 40 channels; conv1 gives 47
    bad = graph.PrunedResNetArch(arch.name, arch.layers, tuple(table.items()))
    with pytest.raises(ValueError, match="layer1.0.conv2.weight takes 40 channels, not 47"):
        bad.schema()


@pytest.mark.parametrize("name", ["eca_resnext26ts", "eca_nfnet_l0"])
def test_train_mode_forward_matches_timm(name):
    """Training-mode forwards (BatchNorm on batch statistics; NFNet has none) equal timm's."""
    import keras
    from flax import nnx

    from eca_multi.flax.io import load_canonical_model as flax_load
    from eca_multi.flax.models import create_model as flax_create
    from eca_multi.keras.io import load_canonical_model as keras_load
    from eca_multi.keras.models import create_model as keras_create

    torch.manual_seed(0)
    model = randomize_batchnorm_(timm.create_model(name), seed=7, name=name, image_size=64)
    state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    x = np.random.default_rng(7).standard_normal((2, 3, 65, 65)).astype(np.float32)
    with torch.no_grad():
        want = model.train()(torch.from_numpy(x)).double().numpy()
    km = keras_create(name, data_format="channels_first")
    keras_load(km, state)
    got_k = np.asarray(keras.ops.convert_to_numpy(km(x, training=True)), np.float64)
    fm = flax_create(name, rngs=nnx.Rngs(0))
    flax_load(fm, state)
    fm.train()
    got_f = np.asarray(fm(x.transpose(0, 2, 3, 1)), np.float64)
    for fw, got in (("keras-" + keras.backend.backend(), got_k), ("flax", got_f)):
        err = float(np.abs(got - want).max())
        assert err <= TOL, f"{fw}/{name} train mode at 65: max abs {err:.2e} > {TOL:.0e}"
