"""Distributed engines (issue 5), each through its example script in a fresh interpreter:

* PyTorch DistributedDataParallel over 2 gloo processes, and FSDP2 (``fully_shard``) on CPU;
* JAX: NamedSharding over a 4-device mesh (``--xla_force_host_platform_device_count=4``);
* TensorFlow: tf.distribute.MirroredStrategy over 2 logical CPU devices (KERAS_BACKEND=tensorflow).

Each trains eca_resnet18 (32 x 32 images, 3 SGD steps with momentum) and must end with the same
weights and BatchNorm statistics as the same steps on one device / in one process: every tensor
within 1e-5 (scaled by max(1, max |w|)), while training moved the weights by far more.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REQUIRE_ALL

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOL = 1e-5

ENGINES = [
    ("torch-ddp", "deploy_torch_ddp.py", ["--engine", "ddp"], ("torch",)),
    ("torch-fsdp", "deploy_torch_ddp.py", ["--engine", "fsdp"], ("torch",)),
    ("jax-sharding", "deploy_jax_sharding.py", [], ("jax", "flax", "optax")),
    ("tf-mirrored", "deploy_tf_mirrored.py", [], ("tensorflow", "keras")),
]


@pytest.mark.parametrize("name, script, args, needs", ENGINES, ids=[e[0] for e in ENGINES])
def test_distributed_matches_single_device(tmp_path, name, script, args, needs):
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    if missing:
        if REQUIRE_ALL:
            pytest.fail(f"{name}: {missing} not installed")
        pytest.skip(f"backend missing: {missing} not installed")
    out = tmp_path / "result.json"
    env = {**os.environ, "XLA_FLAGS": ""}  # the JAX example sets its own device count
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, (
        f"{name}: rc={proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    )
    res = json.loads(out.read_text())
    assert "-> OK" in proc.stdout, proc.stdout
    msg = (
        f"{name}: max_abs={res['max_abs_diff']:.2e}, scaled={res['max_scaled_diff']:.2e} "
        f"({res['worst']}) > {TOL:.0e}"
    )
    assert res["max_scaled_diff"] <= TOL, msg
    assert res["tensors"] == 130, f"{name}: compared {res['tensors']} tensors, eca_resnet18 has 130"
    assert res["max_abs_update"] > 1e-2, f"{name}: training barely moved the weights: {res}"
    if name.startswith("torch"):
        assert res["world"] == 2 and res["engine"] == args[1], res
    elif name == "jax-sharding":
        assert res["devices"] == 4 and res["param_devices"] == 4, res
        assert "'data'" in res["batch_sharding"], res  # the batch axis split over the mesh
    else:
        assert res["replicas"] == 2 and len(set(res["devices"])) == 2, res
