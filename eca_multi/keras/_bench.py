"""The Keras 3 benchmark run by :mod:`eca_multi.benchmark` (one process per Keras backend).

Modes: ``eager`` (the layer called directly) and ``jit`` (``tf.function(jit_compile=True)`` on
tensorflow, ``jax.jit`` of ``stateless_call`` on jax; the torch Keras backend has no jit mode),
channels_last (the Keras default). The floor is ``x * ops.mean(x, spatial, keepdims=True)`` run
the same way. Model rows: ``predict_on_batch`` / ``train_on_batch`` of ECA-ResNet50 and of the
same builder with ``attention=None``.
"""

from __future__ import annotations

import inspect

import keras
import numpy as np
from keras import ops

from ..benchmark import DTYPES, LAYER_SHAPES, QUICK_SHAPES, inference_reps, paired, shape_id
from . import ECA

__all__ = ["run"]

_BACKEND = keras.backend.backend()


def _floor(x):
    return x * ops.mean(x, axis=tuple(range(1, len(x.shape) - 1)), keepdims=True)


def _sync(t):
    if _BACKEND == "jax":
        return [a.block_until_ready() for a in (t if isinstance(t, (list, tuple)) else [t])]
    if _BACKEND == "tensorflow":  # eager TF ops run synchronously on CPU; .numpy() would copy
        return t
    return t


def _fns(layer: ECA, jit: bool):
    """(floor fwd, eca fwd, floor fwd+bwd, eca fwd+bwd) taking (x, g)."""
    if _BACKEND == "tensorflow":
        import tensorflow as tf

        kernel = layer.kernel.value

        def grad(fn, params):
            def f(x, g):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = fn(x)
                return tape.gradient(y, [x, *params], output_gradients=g)

            return f

        fns = (_floor, layer, grad(_floor, []), grad(layer, [kernel]))
        if jit:
            fns = tuple(tf.function(f, jit_compile=True) for f in fns)
        return fns[0], fns[1], fns[2], fns[3]
    if _BACKEND == "jax":
        import jax

        kernel = layer.kernel.value

        def eca(k, x):
            return layer.stateless_call([k], [], x)[0]

        def floor_vjp(x, g):
            return jax.vjp(_floor, x)[1](g)

        def eca_vjp(x, g):
            return jax.vjp(eca, kernel, x)[1](g)

        if jit:
            floor_fwd, eca_fwd = jax.jit(_floor), jax.jit(lambda x: eca(kernel, x))
            return floor_fwd, eca_fwd, jax.jit(floor_vjp), jax.jit(eca_vjp)
        return _floor, layer, floor_vjp, eca_vjp
    import torch

    kernel = layer.kernel.value

    def autograd(fn, params):
        def f(x, g):
            return torch.autograd.grad(fn(x), (x, *params), g)

        return f

    return _floor, layer, autograd(_floor, []), autograd(layer, [kernel])


def _mode_rows(shape, dtype: str, jit: bool, reps: int) -> list[dict]:
    rng = np.random.default_rng(0)
    cl = (shape[0], *shape[2:], shape[1])  # channels_last
    x = ops.cast(ops.convert_to_tensor(rng.standard_normal(cl, dtype=np.float32)), dtype)
    g = ops.cast(ops.convert_to_tensor(rng.standard_normal(cl, dtype=np.float32)), dtype)
    layer = ECA(channels=shape[1], data_format="channels_last")
    layer.build(cl)
    floor_f, eca_f, floor_b, eca_b = _fns(layer, jit)
    if _BACKEND == "torch":
        import torch

        xg = x.detach().requires_grad_(True)
        with torch.no_grad():
            fwd = paired(lambda: floor_f(x), lambda: eca_f(x), reps=reps)
        both = paired(lambda: floor_b(xg, g), lambda: eca_b(xg, g), reps=reps)
    else:
        fwd = paired(lambda: _sync(floor_f(x)), lambda: _sync(eca_f(x)), reps=reps)
        both = paired(lambda: _sync(floor_b(x, g)), lambda: _sync(eca_b(x, g)), reps=reps)
    mode = "jit" if jit else "eager"
    base = {"framework": f"keras-{_BACKEND}", "mode": mode, "shape": shape_id(shape)}
    return [
        {**base, "dtype": dtype, "pass": "fwd", **fwd},
        {**base, "dtype": dtype, "pass": "fwd+bwd", **both},
    ]


def _model_rows(quick: bool, reps: int) -> list[dict]:
    from . import models

    name = "eca_resnet18" if quick else "eca_resnet50"
    batch, size = (2, 32) if quick else (8, 224)
    if "attention" not in inspect.signature(models.create_model).parameters:
        return []  # no way to build the plain twin with the same code
    keras.utils.set_random_seed(0)
    eca = models.create_model(name, data_format="channels_last")
    keras.utils.set_random_seed(0)
    plain = models.create_model(name, data_format="channels_last", attention=None)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, size, size, 3), dtype=np.float32)
    labels = rng.integers(0, 1000, (batch,))
    for m in (eca, plain):
        m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    arch = "ResNet-18" if quick else "ResNet-50"
    base = {
        "framework": f"keras-{_BACKEND}",
        "mode": "model",
        "shape": f"{arch} {batch}x{size}x{size}x3",
        "dtype": "float32",
        "note": "plain twin = create_model(name, attention=None); predict/train_on_batch",
    }
    inf = paired(
        lambda: plain.predict_on_batch(x),
        lambda: eca.predict_on_batch(x),
        reps=inference_reps(reps),
        block_s=0,
    )
    train = paired(
        lambda: plain.train_on_batch(x, labels),
        lambda: eca.train_on_batch(x, labels),
        reps=max(3, reps // 2),
        block_s=0,
    )
    rows = [{**base, "pass": "inference", **inf}, {**base, "pass": "train step", **train}]
    if _BACKEND == "tensorflow":  # predict runs TF's graph executor unless XLA is asked for
        for m in (eca, plain):
            m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", jit_compile=True)
        xla = paired(
            lambda: plain.predict_on_batch(x),
            lambda: eca.predict_on_batch(x),
            reps=inference_reps(reps),
            block_s=0,
        )
        rows.append({**base, "pass": "inference (jit_compile)", **xla})
    return rows


def _timm_rows(quick: bool, reps: int) -> list[dict]:
    """ECA-NFNet-L0 inference against timm's own model on the same CPU (floor = timm)."""
    from ..peers.timm import inference
    from . import models

    name, (batch, size) = "eca_nfnet_l0", (1, 64) if quick else (4, 224)
    timm_run = inference(name, batch, size)
    keras.utils.set_random_seed(0)
    model = models.create_model(name, data_format="channels_last")
    x = np.random.default_rng(0).standard_normal((batch, size, size, 3), dtype=np.float32)
    base = {
        "framework": f"keras-{_BACKEND}",
        "mode": "vs timm",
        "shape": f"ECA-NFNet-L0 {batch}x{size}x{size}x3",
        "dtype": "float32",
        "note": "floor = timm.create_model(name) eval, no_grad, NCHW (torch eager)",
    }
    eager = paired(timm_run, lambda: _sync(model(x, training=False)), reps=reps, block_s=0)
    rows = [{**base, "pass": "inference (eager call)", **eager}]
    if _BACKEND != "torch":  # predict_on_batch compiles (XLA) on jax; TF: jit_compile=True
        model.compile(jit_compile=True)
        jit = paired(timm_run, lambda: model.predict_on_batch(x), reps=reps, block_s=0)
        rows.append({**base, "pass": "inference (jit)", **jit})
    return rows


def run(opts: dict) -> list[dict]:
    """Layer rows for every shape x dtype x mode x pass, then the model rows."""
    quick = bool(opts.get("quick"))
    reps = opts.get("reps") or (3 if quick else 7)
    shapes = QUICK_SHAPES if quick else LAYER_SHAPES
    rows = []
    if opts.get("layers", True):
        for dtype in DTYPES[:1] if quick else DTYPES:
            for i, shape in enumerate(shapes):
                # quick (smoke) runs compile one shape only: each compile costs seconds
                jits = (False, True) if _BACKEND != "torch" and (not quick or i == 0) else (False,)
                for jit in jits:
                    rows += _mode_rows(shape, dtype, jit, reps)
    if opts.get("models", True):
        rows += _model_rows(quick, reps)
        rows += _timm_rows(quick, inference_reps(reps))
    return rows
