"""The Flax benchmark run by :mod:`eca_multi.benchmark` (``eca-multi bench --backends flax``).

Mode ``nnx-jit``: the NNX module split once (``nnx.split``) and merged inside ``jax.jit``, so a
call costs what ``jax.jit`` costs; the floor ``x * jnp.mean(x, spatial, keepdims=True)`` is jitted
the same way. channels_last (the Flax default). Model rows: ECA-ResNet50 against the same builder
with ``attention=None``, inference (eval mode) and one SGD training step, each under ``jax.jit``.
"""

from __future__ import annotations

import inspect
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..benchmark import DTYPES, LAYER_SHAPES, QUICK_SHAPES, inference_reps, paired, shape_id
from .layer import ECA

__all__ = ["run"]


def _floor(x):
    return x * jnp.mean(x, axis=tuple(range(1, x.ndim - 1)), keepdims=True)


def _ready(t):
    return jax.block_until_ready(t)


def _mode_rows(shape, dtype: str, reps: int) -> list[dict]:
    rng = np.random.default_rng(0)
    cl = (shape[0], *shape[2:], shape[1])  # channels_last
    x = jnp.asarray(rng.standard_normal(cl, dtype=np.float32), dtype=dtype)
    g = jnp.asarray(rng.standard_normal(cl, dtype=np.float32), dtype=dtype)
    graphdef, state = nnx.split(ECA(channels=shape[1], rngs=nnx.Rngs(0)))

    def eca(state, x):
        return nnx.merge(graphdef, state)(x)

    floor_f, eca_f = jax.jit(_floor), jax.jit(eca)
    floor_b = jax.jit(lambda x, g: jax.vjp(_floor, x)[1](g))
    eca_b = jax.jit(lambda s, x, g: jax.vjp(eca, s, x)[1](g))
    fwd = paired(lambda: _ready(floor_f(x)), lambda: _ready(eca_f(state, x)), reps=reps)
    both = paired(lambda: _ready(floor_b(x, g)), lambda: _ready(eca_b(state, x, g)), reps=reps)
    base = {"framework": "flax", "mode": "nnx-jit", "shape": shape_id(shape), "dtype": dtype}
    return [{**base, "pass": "fwd", **fwd}, {**base, "pass": "fwd+bwd", **both}]


def _plain_twin(model: nnx.Module) -> nnx.Module:
    """The same network with every ECA module replaced by an identity (older builders)."""

    class Identity(nnx.Module):
        def __call__(self, x):
            return x

    for path, module in list(nnx.iter_graph(model)):
        if isinstance(module, ECA) and path:
            parent: Any = model
            for p in path[:-1]:
                parent = parent[p] if isinstance(p, int) else getattr(parent, cast(str, p))
            setattr(parent, cast(str, path[-1]), Identity())  # an attribute (eca / se)
    return model


def _model_rows(quick: bool, reps: int) -> list[dict]:
    from . import models

    name = "eca_resnet18" if quick else "eca_resnet50"
    batch, size = (2, 32) if quick else (8, 224)
    eca = models.create_model(name, rngs=nnx.Rngs(0))
    plain: nnx.Module
    if "attention" in inspect.signature(models.create_model).parameters:
        plain = models.create_model(name, rngs=nnx.Rngs(0), attention=None)
        note = "plain twin = create_model(name, attention=None)"
    else:
        plain = _plain_twin(models.create_model(name, rngs=nnx.Rngs(0)))
        note = "plain twin = the same builder with each ECA module replaced by an identity"
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, size, size, 3), dtype=np.float32))
    labels = jnp.asarray(rng.integers(0, 1000, (batch,)))

    def prepared(model):
        model.eval()
        gdef, state = nnx.split(model)
        infer = jax.jit(lambda s, x: nnx.merge(gdef, s)(x))
        model.train()
        # nnx.split's stub returns a variadic tuple of states (two filters give two)
        tdef, params, rest = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]

        @jax.jit
        def step(params, rest, x, y):
            model = nnx.merge(tdef, params, rest)

            def loss(m):
                logp = jax.nn.log_softmax(m(x))
                return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))

            grads = nnx.grad(loss)(model)
            new = jax.tree.map(lambda p, d: p - 1e-3 * d, nnx.state(model, nnx.Param), grads)
            return new, nnx.state(model, nnx.Not(nnx.Param))

        return (lambda: _ready(infer(state, x))), (lambda: _ready(step(params, rest, x, labels)))

    (plain_inf, plain_step), (eca_inf, eca_step) = prepared(plain), prepared(eca)
    arch = "ResNet-18" if quick else "ResNet-50"
    base = {
        "framework": "flax",
        "mode": "model",
        "shape": f"{arch} {batch}x{size}x{size}x3",
        "dtype": "float32",
        "note": note,
    }
    inf = paired(plain_inf, eca_inf, reps=inference_reps(reps), block_s=0)
    train = paired(plain_step, eca_step, reps=max(3, reps // 2), block_s=0)
    return [{**base, "pass": "inference", **inf}, {**base, "pass": "train step", **train}]


def _timm_rows(quick: bool, reps: int) -> list[dict]:
    """ECA-NFNet-L0 inference against timm's own model on the same CPU (floor = timm)."""
    from ..peers.timm import inference
    from . import models

    name, (batch, size) = "eca_nfnet_l0", (1, 64) if quick else (4, 224)
    timm_run = inference(name, batch, size)
    model = models.create_model(name, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, size, size, 3), np.float32))
    jitted = nnx.jit(lambda m, x: m(x))
    base = {
        "framework": "flax",
        "mode": "vs timm",
        "shape": f"ECA-NFNet-L0 {batch}x{size}x{size}x3",
        "dtype": "float32",
        "note": "floor = timm.create_model(name) eval, no_grad, NCHW (torch eager)",
    }
    eager = paired(timm_run, lambda: _ready(model(x)), reps=reps, block_s=0)
    jit = paired(timm_run, lambda: _ready(jitted(model, x)), reps=reps, block_s=0)
    return [
        {**base, "pass": "inference (eager)", **eager},
        {**base, "pass": "inference (nnx.jit)", **jit},
    ]


def run(opts: dict) -> list[dict]:
    """Layer rows for every shape x dtype x pass, then the model rows."""
    quick = bool(opts.get("quick"))
    reps = opts.get("reps") or (3 if quick else 7)
    rows = []
    if opts.get("layers", True):
        for dtype in DTYPES[:1] if quick else DTYPES:
            for shape in QUICK_SHAPES if quick else LAYER_SHAPES:
                rows += _mode_rows(shape, dtype, reps)
    if opts.get("models", True):
        rows += _model_rows(quick, reps)
        rows += _timm_rows(quick, inference_reps(reps))
    return rows
