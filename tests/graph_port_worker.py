"""Worker of tests/test_graph_archs.py: port timm files of the graph architectures into one
target (a Keras backend, or Flax), run them, and write back what the parent checks.

    python tests/graph_port_worker.py JOB.json

JOB: {"target": "keras" | "flax", "dir": folder, "archs": {name: {"sizes": [...]}}}. The folder
holds ``{name}/model.safetensors`` (timm's file) and ``{name}/x{size}.npy`` (NCHW inputs). For
each arch the worker writes ``{name}/{target}-{backend}/``: the ported file, ``logits{size}.npy``
(the model loaded back from that file, and the other data format at the odd size for Keras),
``canonical.safetensors`` (the ported file back to canonical) and ``params.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def _keras(arch: str, src: Path, out: Path, sizes: list[int]) -> dict:
    import keras

    from eca_multi.keras.io import load_canonical_model
    from eca_multi.keras.models import create_model
    from eca_multi.port import load_model, port
    from eca_multi.weights.io import load_file

    backend = keras.backend.backend()
    # each backend writes another file kind and runs the other data format at the odd size
    suffix = {"tensorflow": ".keras", "jax": ".weights.h5", "torch": ".keras"}[backend]
    port(src, arch, "keras", out / f"model{suffix}", progress=False, force=True)
    _, model = load_model(out / f"model{suffix}", arch)
    fmt = next(la.data_format for la in model.layers if hasattr(la, "data_format"))
    other = "channels_last" if fmt == "channels_first" else "channels_first"
    twin = create_model(arch, data_format=other)
    load_canonical_model(twin, load_file(src)[0])
    result = {"formats": {}}
    for i, size in enumerate(sizes):
        m, df = (model, fmt) if i == 0 else (twin, other)
        x = np.load(out.parent / f"x{size}.npy")
        xi = x if df == "channels_first" else x.transpose(0, 2, 3, 1)
        if backend == "tensorflow" and df == "channels_first":
            # TensorFlow runs a grouped conv on CPU only through XLA, and Keras' eager conv
            # retraces and compiles one XLA function per call: NFNet-L1 at 161 px takes minutes
            # eagerly, seconds compiled whole (the eager path is the 224/256/320 px row)
            import tensorflow as tf

            y = tf.function(lambda v, m=m: m(v, training=False), jit_compile=True)(xi)
        elif backend == "jax" and i:
            # eager JAX compiles every op for every new shape (the pruned ResNets: ~50 s a
            # forward); predict compiles the model once (the eager path is the first row)
            y = m.predict(xi, verbose=0)
        else:
            y = m(xi, training=False)
        y = keras.ops.convert_to_numpy(y)
        np.save(out / f"logits{size}.npy", np.asarray(y, np.float64))
        result["formats"][str(size)] = df
    port(out / f"model{suffix}", arch, "canonical", out / "canonical.safetensors", force=True)
    result["params"] = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    return result


def _flax(arch: str, src: Path, out: Path, sizes: list[int]) -> dict:
    from flax import nnx

    from eca_multi.port import load_model, port

    port(src, arch, "flax", out / "model.msgpack", progress=False, force=True)
    _, model = load_model(out / "model.msgpack", arch)
    for size in sizes:
        x = np.load(out.parent / f"x{size}.npy").transpose(0, 2, 3, 1)
        np.save(out / f"logits{size}.npy", np.asarray(model(x), np.float64))
    port(out / "model.msgpack", arch, "canonical", out / "canonical.safetensors", force=True)
    params = nnx.state(model, nnx.Param)
    n = sum(int(np.prod(v.shape)) for v in __import__("jax").tree_util.tree_leaves(params))
    return {"params": n, "formats": {str(s): "channels_last" for s in sizes}}


def main() -> int:
    try:  # torch (and triton, through torch._dynamo) before TensorFlow: the other order segfaults
        import torch  # noqa: F401
        import torch._dynamo  # noqa: F401
    except ImportError:
        pass
    job = json.loads(Path(sys.argv[1]).read_text())
    root = Path(job["dir"])
    if job["target"] == "keras":
        import keras

        tag, run = f"keras-{keras.backend.backend()}", _keras
    else:
        tag, run = "flax", _flax
    for arch, spec in job["archs"].items():
        out = root / arch / tag
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        result = run(arch, root / arch / "model.safetensors", out, spec["sizes"])
        (out / "result.json").write_text(json.dumps(result))
        print(f"{tag} {arch} done in {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
