"""Conformance adapter for the Flax backend (see :mod:`eca_multi.conformance.backends`).

Variants: ``"nnx"`` (eager NNX module, eager ``jax.vjp``), ``"nnx-jit"`` (forward and VJP inside
one ``nnx.jit``), ``"linen"`` (Linen ``apply`` and its VJP inside one ``jax.jit``).
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..conformance.cases import Case
from ..weights import Layout, to_canonical
from . import linen
from .nnx import ECA, load_canonical

VARIANTS = ("nnx", "nnx-jit", "linen")


def setup() -> dict:
    """Full float32 precision for matmuls / convs (no TF32 or bf16 passes); versions and device."""
    jax.config.update("jax_default_matmul_precision", "highest")
    device = jax.devices()[0]
    return {
        "jax": jax.__version__,
        "flax": flax.__version__,
        "device": f"{device.platform}:{device.device_kind}",
    }


def _vjp_nnx(layer: ECA, x: jax.Array, g: jax.Array):
    graphdef, params = nnx.split(layer)
    y, pullback = jax.vjp(lambda p, x: nnx.merge(graphdef, p)(x), params, x)
    dparams, dx = pullback(g)
    return y, dx, dparams["kernel"][...]


def _run_linen(case: Case, state: dict, x: jax.Array, g: jax.Array):
    module = linen.ECA(**case.layer_kwargs())
    variables = linen.load_canonical(module, None, state)

    @jax.jit
    def fwd_bwd(variables, x, g):
        y, pullback = jax.vjp(module.apply, variables, x)
        dvars, dx = pullback(g)
        return y, dx, dvars["params"]["kernel"]

    return fwd_bwd(variables, x, g)


def run_case(variant: str, case: Case, golden: dict) -> dict:
    """Forward and VJP (upstream gradient ``golden["g"]``) of one case; float64 NumPy results."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown flax variant {variant!r}; known: {', '.join(VARIANTS)}")
    state = {"conv.weight": np.asarray(golden["w"], dtype=np.float32)}
    x = jnp.asarray(golden["x"], dtype=case.dtype)
    g = jnp.asarray(golden["g"], dtype=case.dtype)
    if variant == "linen":
        y, dx, dk = _run_linen(case, state, x, g)
    else:
        layer = ECA(**case.layer_kwargs(), rngs=nnx.Rngs(0))
        load_canonical(layer, state)
        y, dx, dk = (nnx.jit(_vjp_nnx) if variant == "nnx-jit" else _vjp_nnx)(layer, x, g)
    return {
        "y": np.asarray(y, dtype=np.float64),
        "dx": np.asarray(dx, dtype=np.float64),
        "dw": to_canonical(np.asarray(dk, dtype=np.float64), Layout.CONV1D),
        "y_dtype": str(y.dtype),
        "dx_dtype": str(dx.dtype),
    }
