"""Export (``jax.export``) and data-parallel training (``jax.sharding``) for the Flax NNX zoo.

Export: :func:`export_model` turns an NNX module into a serialized StableHLO function of
``(weights, x)`` with symbolic batch and spatial axes (``jax.export.symbolic_shape``); the weights
travel as a flat ``{"path/to/param": array}`` dict (serializable without Flax), so an artifact
made here runs with ``jax.export.deserialize(blob).call(weights, x)`` and no model code.

Distributed: :func:`sharded_check` trains an ECA-ResNet with the batch split over the devices of
a ``Mesh`` (``NamedSharding(mesh, P("data"))``, parameters replicated) and compares every
parameter and BatchNorm statistic with the same steps on one device. On a CPU host, start the
process with ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` for four devices.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..deploy import (
    check,
    compare_states,
    layer_case,
    layer_reference,
    model_inputs,
    random_batchnorm_state,
)
from .io import export_canonical_model, load_canonical_model
from .layer import ECA, load_canonical
from .models import create_model

__all__ = [
    "build_model",
    "export_model",
    "flat_weights",
    "run_export_matrix",
    "sharded_check",
]


def build_model(name: str, seed: int = 0) -> nnx.Module:
    """Architecture ``name`` (eval mode) with random BatchNorm statistics."""
    model = create_model(name)
    load_canonical_model(model, random_batchnorm_state(export_canonical_model(model), name, seed))
    return model


def _key(path: tuple) -> str:
    return "/".join(str(p) for p in path)


def flat_weights(model: nnx.Module) -> dict[str, jax.Array]:
    """Every variable of ``model`` (parameters and BatchNorm statistics) as {"a/0/b": array}."""
    return {_key(path): var[...] for path, var in nnx.to_flat_state(nnx.state(model))}


def export_model(model: nnx.Module, input_shape: str, dtype: Any = jnp.float32):
    """``jax.export`` of ``model`` as a function ``f(weights, x)``.

    Args:
        model: any NNX module (called as ``model(x)`` in its current train / eval mode).
        input_shape: the input's shape for ``jax.export.symbolic_shape``, e.g. ``"b, h, w, 3"``
            (symbolic batch, height and width) or ``"2, 64, 64, 3"``.
        dtype: the input dtype.

    Returns:
        (``jax.export.Exported``, the weights dict to call it with).
    """
    graphdef, state = nnx.split(model)
    paths = {_key(p): p for p, _ in nnx.to_flat_state(state)}

    def fn(weights: dict[str, jax.Array], x: jax.Array) -> jax.Array:
        variables = {path: weights[key] for key, path in paths.items()}
        return nnx.merge(graphdef, nnx.from_flat_state(variables))(x)

    weights = flat_weights(model)
    x_spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape(input_shape), dtype)
    w_spec = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in weights.items()}
    return jax.export.export(jax.jit(fn))(w_spec, x_spec), weights


def run_export_matrix(models: Sequence[str], workdir: str | os.PathLike) -> list[dict]:
    """One row per export path x model (``jax.export`` serialize / deserialize / call)."""
    jax.config.update("jax_default_matmul_precision", "float32")
    work = Path(workdir)
    rows = []
    for name in models:
        if name == "layer":
            case = layer_case("channels_last")
            layer = ECA(channels=64, rngs=nnx.Rngs(0))
            load_canonical(layer, {"conv.weight": case["weight"]})
            module: nnx.Module = layer
            want, x, shape = layer_reference(case), case["x"], "b, h, w, 64"
            note = f"symbolic ({shape}), run {x.shape}"
        else:
            module = build_model(name)
            _, x, _ = model_inputs("channels_last")
            want, shape = np.asarray(module(jnp.asarray(x))), "b, h, w, 3"  # eager NNX
            note = f"symbolic ({shape}), run {x.shape}"

        def run(module=module, x=x, want=want, name=name, shape=shape):
            exported, weights = export_model(module, shape)
            path = work / f"{name}.jax_exported"
            path.write_bytes(exported.serialize())
            back = jax.export.deserialize(bytearray(path.read_bytes()))
            return np.asarray(back.call(weights, jnp.asarray(x))), want

        rows.append(check("jax.export", name, run, note=note))
    return rows


# ---------------------------------------------------------------------------------------------
# distributed: NamedSharding over a device mesh == one device


def _train(
    model: nnx.Module, batches, steps_sharding=None, lr: float = 0.05, batchnorm: str = "frozen"
) -> nnx.Module:
    import optax

    if batchnorm not in ("frozen", "batch"):
        raise ValueError(f"batchnorm must be 'frozen' or 'batch', got {batchnorm!r}")
    if batchnorm == "batch":
        model.train()  # BatchNorm on batch statistics (global ones when the batch is sharded)
    # else: the zoo's models are built in eval mode: BN on running statistics, scale/bias train
    opt = nnx.Optimizer(model, optax.sgd(lr, momentum=0.9), wrt=nnx.Param)
    if steps_sharding is not None:  # replicate parameters, optimizer state and BN statistics
        state = nnx.state((model, opt))
        nnx.update((model, opt), jax.device_put(state, steps_sharding["replicated"]))

    @nnx.jit
    def step(model, opt, x, y):
        def loss_fn(model):
            logits = model(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    for x, y in batches:
        if steps_sharding is not None:  # the batch axis split over the mesh's "data" axis
            x = jax.device_put(x, steps_sharding["batch"])
            y = jax.device_put(y, steps_sharding["batch"])
        step(model, opt, x, y)
    model.eval()
    return model


def sharded_check(
    devices: int | None = None,
    arch: str = "eca_resnet18",
    steps: int = 3,
    batch: int = 8,
    size: int = 32,
    num_classes: int = 10,
    seed: int = 0,
    lr: float = 0.05,
    batchnorm: str = "frozen",
) -> dict:
    """Data-parallel training over a ``devices``-long mesh vs one device; compare.

    ``batchnorm="frozen"`` (default): BatchNorm on its running statistics (scale and bias still
    train), so float32 agreement is the test. ``"batch"``: BatchNorm on batch statistics, which
    the SPMD program computes over the global (sharded) batch: after 1 step the runs agree to
    4e-7 (measured, eca_resnet18 at 64 x 64, batch 8), but over 3 SGD steps the BatchNorm
    1/sigma of 2-image, 1 x 1 feature maps amplifies the float32 reduction-order differences
    chaotically (measured 6e-7 to 1.3e-4 depending on size and learning rate).

    Returns {"devices", "platform", "batch_sharding", "param_devices" (devices holding the
    trained parameters), ...} and :func:`eca_multi.deploy.compare_states` of every parameter and
    BatchNorm statistic (sharded vs single device).
    """
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    jax.config.update("jax_default_matmul_precision", "float32")
    n = devices or len(jax.devices())
    if batch % n:
        raise ValueError(f"batch {batch} must be divisible by the {n} devices")
    mesh = Mesh(np.array(jax.devices()[:n]), ("data",))
    shardings = {
        "batch": NamedSharding(mesh, P("data")),
        "replicated": NamedSharding(mesh, P()),
    }
    rng = np.random.default_rng(seed)
    batches = [
        (
            rng.standard_normal((batch, size, size, 3)).astype(np.float32),
            rng.integers(0, num_classes, batch).astype(np.int32),
        )
        for _ in range(steps)
    ]
    start = flat_weights(create_model(arch, num_classes=num_classes, rngs=nnx.Rngs(seed)))
    single = _train(
        create_model(arch, num_classes=num_classes, rngs=nnx.Rngs(seed)), batches, lr=lr
    )
    sharded: nnx.Module = create_model(arch, num_classes=num_classes, rngs=nnx.Rngs(seed))
    sharded = _train(sharded, batches, shardings, lr=lr, batchnorm=batchnorm)
    want, got = flat_weights(single), flat_weights(sharded)
    res = compare_states(got, want, start)
    kernel = next(v for k, v in got.items() if k.endswith("kernel"))
    return {
        "engine": "jax.sharding NamedSharding (data parallel)",
        "devices": n,
        "platform": jax.devices()[0].platform,
        "arch": arch,
        "steps": steps,
        "batchnorm": batchnorm,
        **res,
        "batch_sharding": str(shardings["batch"].spec),
        "param_devices": len(kernel.sharding.device_set),
    }
