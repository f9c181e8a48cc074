"""Conformance adapter of the torch backend (see :mod:`eca_multi.conformance.backends`).

Variants: ``"eager"`` runs the module as is; ``"compile"`` runs
``torch.compile(fullgraph=True, dynamic=False)`` of a function returning the layer's output, with
the backward (AOTAutograd's compiled graph) reached through ``torch.autograd.grad``. Every member
of the channel-attention family (:data:`ATTENTIONS`) runs, built by
:func:`eca_multi.torch.family.make_attention` from the case's arguments.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import torch

from ..conformance.generate import golden_params
from ..family import ATTENTIONS, attention_schema
from ._ops import Gated
from .family import make_attention
from .io import load_canonical, versions

__all__ = ["ATTENTIONS", "VARIANTS", "run_case", "setup"]

VARIANTS = ("eager", "compile")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_NAMES = {v: k for k, v in _DTYPES.items()}


def setup() -> dict:
    """Full precision (TF32 off everywhere) and the versions / device the numbers come from."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    return versions()


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _forward(layer: torch.nn.Module, variant: str):
    if variant == "eager":
        return layer
    if variant == "compile":
        # each case builds a new layer and usually new shapes: start from a clean dynamo cache so
        # guards from earlier cases never pile up into the recompile limit (eager fallback)
        torch.compiler.reset()
        return torch.compile(lambda x: layer(x), fullgraph=True, dynamic=False)
    raise ValueError(f"unknown torch conformance variant {variant!r}; known: {', '.join(VARIANTS)}")


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(device="cpu", dtype=torch.float64).numpy()


def run_case(variant: str, case, golden: dict) -> dict:
    """Forward and VJP of one case; float64 y, dx, dparams (canonical names) and output dtypes."""
    device, dtype = _device(), _DTYPES[case.dtype]
    layer = make_attention(case.attention, **case.attention_kwargs()).to(device)
    load_canonical(layer, golden_params(golden))
    names = list(attention_schema(cast(Gated, layer).config))  # every attention is Gated
    params = [layer.get_parameter(n) for n in names]
    fn = _forward(layer, variant)
    x = torch.as_tensor(golden["x"]).to(device=device, dtype=dtype).requires_grad_(True)
    g = torch.as_tensor(golden["g"]).to(device=device, dtype=dtype)
    y = fn(x)
    dx, *dparams = torch.autograd.grad(y, (x, *params), grad_outputs=g, materialize_grads=True)
    return {
        "y": _numpy(y),
        "dx": _numpy(dx),
        "dparams": {n: _numpy(d) for n, d in zip(names, dparams, strict=True)},  # torch = canonical
        "y_dtype": _NAMES[y.dtype],
        "dx_dtype": _NAMES[dx.dtype],
    }
