"""Conformance adapter for the Flax backend (see :mod:`eca_multi.conformance.backends`).

Variants: ``"nnx"`` (eager NNX module, eager ``jax.vjp``), ``"nnx-jit"`` (forward and VJP inside
one ``nnx.jit``), ``"linen"`` (Linen ``apply`` and its VJP inside one ``jax.jit``). Every variant
runs every family member (:data:`ATTENTIONS`): the Linen modules share the NNX modules' ops.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..conformance.cases import Case
from ..conformance.generate import golden_params
from ..family import ATTENTIONS as _ALL
from . import linen
from .family import export_canonical, load_canonical, make_attention
from .io import versions

VARIANTS = ("nnx", "nnx-jit", "linen")
ATTENTIONS = _ALL  # every family member, in every variant (Linen through linen.make_attention)


def setup() -> dict:
    """Full float32 precision for matmuls / convs (no TF32 or bf16 passes); the versions report."""
    jax.config.update("jax_default_matmul_precision", "highest")
    return versions()


def _vjp_nnx(layer: nnx.Module, x: jax.Array, g: jax.Array):
    """(y, dx, gradient state): the VJP for upstream g, through split / merge."""
    graphdef, params = nnx.split(layer)
    y, pullback = jax.vjp(lambda p, x: nnx.merge(graphdef, p)(x), params, x)
    dparams, dx = pullback(g)
    return y, dx, dparams


def _run_nnx(variant: str, case: Case, state: dict, x: jax.Array, g: jax.Array):
    layer = make_attention(case.attention, **case.attention_kwargs(), rngs=nnx.Rngs(0))
    load_canonical(layer, state)
    y, dx, dstate = (nnx.jit(_vjp_nnx) if variant == "nnx-jit" else _vjp_nnx)(layer, x, g)
    # the gradient state in the module's structure: its canonical export is the canonical grads
    grads = export_canonical(nnx.merge(nnx.graphdef(layer), dstate))
    return y, dx, grads


def _run_linen(case: Case, state: dict, x: jax.Array, g: jax.Array):
    module = linen.make_attention(case.attention, **case.attention_kwargs())
    variables = linen.load_canonical(module, None, state)

    @jax.jit
    def fwd_bwd(variables, x, g):
        y, pullback = jax.vjp(module.apply, variables, x)
        dvars, dx = pullback(g)
        return y, dx, dvars

    y, dx, dvars = fwd_bwd(variables, x, g)
    return y, dx, linen.export_canonical(module, dvars)


def run_case(variant: str, case: Case, golden: dict) -> dict:
    """Forward and VJP (upstream gradient ``golden["g"]``) of one case; float64 NumPy results.

    Every family member runs through ``make_attention(case.attention, **case.attention_kwargs())``
    (NNX) or ``linen.make_attention`` (Linen); ``dparams`` holds every weight's gradient under
    its canonical name and layout.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown flax variant {variant!r}; known: {', '.join(VARIANTS)}")
    state = golden_params(golden)
    x = jnp.asarray(golden["x"], dtype=case.dtype)
    g = jnp.asarray(golden["g"], dtype=case.dtype)
    if variant == "linen":
        y, dx, grads = _run_linen(case, state, x, g)
    else:
        y, dx, grads = _run_nnx(variant, case, state, x, g)
    return {
        "y": np.asarray(y, dtype=np.float64),
        "dx": np.asarray(dx, dtype=np.float64),
        "dparams": {k: np.asarray(v, dtype=np.float64) for k, v in grads.items()},
        "y_dtype": str(y.dtype),
        "dx_dtype": str(dx.dtype),
    }
