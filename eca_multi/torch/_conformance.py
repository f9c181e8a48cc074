"""Conformance adapter of the torch backend (see :mod:`eca_multi.conformance.backends`).

Variants: ``"eager"`` runs the module as is; ``"compile"`` runs
``torch.compile(fullgraph=True, dynamic=False)`` of a function returning the layer's output, with
the backward (AOTAutograd's compiled graph) reached through ``torch.autograd.grad``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..weights import Layout, to_canonical
from . import ECA, load_canonical

__all__ = ["VARIANTS", "run_case", "setup"]

VARIANTS = ("eager", "compile")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_NAMES = {v: k for k, v in _DTYPES.items()}


def setup() -> dict:
    """Full precision (TF32 off everywhere) and the versions / device the numbers come from."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {"torch": torch.__version__, "device": device}


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _forward(layer: ECA, variant: str):
    if variant == "eager":
        return layer
    if variant == "compile":
        # each case builds a new layer and usually new shapes: start from a clean dynamo cache so
        # guards from earlier cases never pile up into the recompile limit (eager fallback)
        torch._dynamo.reset()
        return torch.compile(lambda x: layer(x), fullgraph=True, dynamic=False)
    raise ValueError(f"unknown torch conformance variant {variant!r}; known: {', '.join(VARIANTS)}")


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(device="cpu", dtype=torch.float64).numpy()


def run_case(variant: str, case, golden: dict) -> dict:
    """Forward and VJP of one case; returns float64 y, dx, dw (canonical) and output dtypes."""
    device, dtype = _device(), _DTYPES[case.dtype]
    layer = ECA(**case.layer_kwargs()).to(device)
    load_canonical(layer, {"conv.weight": golden["w"].astype(np.float32)})
    fn = _forward(layer, variant)
    x = torch.as_tensor(golden["x"]).to(device=device, dtype=dtype).requires_grad_(True)
    g = torch.as_tensor(golden["g"]).to(device=device, dtype=dtype)
    y = fn(x)
    dx, dw = torch.autograd.grad(y, (x, layer.conv.weight), grad_outputs=g, materialize_grads=True)
    return {
        "y": _numpy(y),
        "dx": _numpy(dx),
        "dw": to_canonical(_numpy(dw), Layout.NONE),  # torch's layout is the canonical one
        "y_dtype": _NAMES[y.dtype],
        "dx_dtype": _NAMES[dx.dtype],
    }
