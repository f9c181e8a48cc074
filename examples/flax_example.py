"""eca-multi with Flax in 30 seconds: build an ECA block (NNX), run it, train one step with optax,
export canonical weights to safetensors and load them into the Linen version.

    python examples/flax_example.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from eca_multi.flax import ECA, export_canonical, linen
from eca_multi.weights import load_file, save_file


def main() -> int:
    # 1. build: k = 3 from the paper's rule for 64 channels; Flax's default layout is channels_last
    layer = ECA(channels=64, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (8, 14, 14, 64)) + jnp.linspace(-2, 2, 64)
    y = layer(x)
    print(f"{layer!r}: {x.shape} -> {y.shape}, kernel {layer.kernel[...].ravel()}")

    # 2. train one step: pull the block's output towards a target
    target = x * 0.9
    optimizer = nnx.Optimizer(layer, optax.sgd(1.0), wrt=nnx.Param)

    @nnx.jit
    def train_step(layer: ECA, optimizer: nnx.Optimizer, x: jax.Array) -> jax.Array:
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - target) ** 2))(layer)
        optimizer.update(layer, grads)
        return loss

    before = train_step(layer, optimizer, x)
    after = jnp.mean((layer(x) - target) ** 2)
    print(f"train step: loss {float(before):.5f} -> {float(after):.5f}")
    assert after < before

    # 3. export canonical weights (torch layout (1, 1, k)) and load them into Linen
    with tempfile.TemporaryDirectory() as tmp:
        path = save_file(Path(tmp) / "eca.safetensors", export_canonical(layer), {"source": "flax"})
        state, meta = load_file(path)
    print(f"exported {[(k, v.shape) for k, v in state.items()]}, metadata {meta}")
    module = linen.ECA(channels=64)
    variables = linen.load_canonical(module, None, state)
    same = np.array_equal(module.apply(variables, x), layer(x))
    print(f"Linen with the exported weights gives the same output: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
