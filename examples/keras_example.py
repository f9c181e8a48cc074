"""30-second tour of eca-multi's Keras 3 ECA: build, run, train a step, export canonical weights.

Runs on any Keras backend: ``KERAS_BACKEND=jax python examples/keras_example.py`` (or tensorflow,
torch). Writes the canonical weights to a temporary folder unless a path is given::

    python examples/keras_example.py [OUT.safetensors]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import keras
import numpy as np

from eca_multi import reference
from eca_multi.keras import ECA, export_canonical, load_canonical
from eca_multi.weights import load_file, save_file


def main(out: str | None = None) -> None:
    # 1. a small channels_last CNN with ECA after the conv (k = 3 from the paper's rule for C = 32)
    inputs = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    h = ECA(channels=32, data_format="channels_last", name="eca")(h)
    logits = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, logits)
    eca = model.get_layer("eca")
    print(f"backend={keras.backend.backend()}  layer={eca!r}")

    # 2. the layer on its own agrees with the float64 NumPy reference
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 32)).astype("float32")
    y = keras.ops.convert_to_numpy(eca(x))
    w = export_canonical(eca)["conv.weight"]  # torch layout (1, 1, k)
    err = np.abs(y - reference.forward(x, w, data_format="channels_last")).max()
    print(f"max |keras - reference| = {err:.2e}")

    # 3. one training step: the ECA kernel receives a gradient and moves
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss_fn)
    images = np.random.default_rng(1).standard_normal((8, 16, 16, 3)).astype("float32")
    labels = np.arange(8) % 10
    before = export_canonical(eca)["conv.weight"].copy()
    loss = model.train_on_batch(images, labels)
    moved = np.abs(export_canonical(eca)["conv.weight"] - before).max()
    print(f"train step: loss={float(loss):.4f}  max kernel change={moved:.2e}")

    # 4. export canonical weights (safetensors, torch layout) and load them into a fresh layer
    path = Path(out) if out else Path(tempfile.mkdtemp()) / "eca.safetensors"
    save_file(path, export_canonical(eca), {"source": "keras"}, overwrite=True)
    state, meta = load_file(path)
    fresh = ECA(channels=32, data_format="channels_last")
    load_canonical(fresh, state)
    same = np.array_equal(keras.ops.convert_to_numpy(fresh(x)), keras.ops.convert_to_numpy(eca(x)))
    print(f"saved {path} ({meta['layout']} layout); reloaded layer gives identical output: {same}")
    if not (err < 1e-5 and moved > 0 and same):
        raise SystemExit("example check failed")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
