"""The part every torch ``nn.Module`` peer shares: dtype, weights in, forward and VJP out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import numpy as np
import torch
from torch import nn

from ..conformance.cases import Case
from ..registry import package_versions

__all__ = ["TorchModuleAdapter"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(dtype=torch.float64).numpy()


class TorchModuleAdapter:
    """A peer that is a torch module whose ``conv.weight`` is ECA's (1, 1, k) kernel.

    Subclasses set ``name``, ``capabilities`` and ``make_module(case)``. The module runs in the
    case's dtype as its users run it, ``module.to(dtype)``, which casts the kernel too: such a
    peer declares ``weight_dtype="input"``, so the suite's 16-bit cases (float32 kernel) are not
    expressible for it.
    """

    name: str
    description: str = ""
    packages: tuple[str, ...] = ("torch",)

    def make_module(self, case: Case) -> nn.Module:
        raise NotImplementedError

    def setup(self) -> None:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False

    def versions(self) -> dict:
        return package_versions(self.packages)

    def build(self, case: Case, weights: Mapping[str, np.ndarray]):
        dtype = DTYPES[case.dtype]
        module = self.make_module(case).eval()
        with torch.no_grad():
            conv = cast(nn.Conv1d, module.conv)  # an ECA peer's k-tap conv (conv.weight)
            conv.weight.copy_(torch.from_numpy(np.asarray(weights["conv.weight"])))
        module = module.to(dtype)

        def forward(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return _numpy(module(torch.from_numpy(x).to(dtype)))

        def vjp(x: np.ndarray, g: np.ndarray):
            xt = torch.from_numpy(x).to(dtype).requires_grad_(True)
            y = module(xt)
            dx, dw = torch.autograd.grad(
                y,
                (xt, cast(nn.Conv1d, module.conv).weight),
                torch.from_numpy(g).to(dtype),
                materialize_grads=True,
            )
            return _numpy(dx), {"conv.weight": _numpy(dw)}

        forward.vjp = vjp  # type: ignore[attr-defined]
        return forward
