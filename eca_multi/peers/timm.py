"""timm's ECA layers as conformance peers: ``EcaModule`` (zero padding) and ``CecaModule``.

Both pool with ``x.mean((2, 3))``: 2-D channels_first only. Given ``channels=None`` they take the
case's kernel size as is (given ``channels`` they force the paper's rule clamped to k >= 3).
"""

from __future__ import annotations

from typing import Any

from timm.layers.eca import CecaModule, EcaModule

from ..conformance.cases import Case
from ..conformance.impl import Capabilities
from ._torch import TorchModuleAdapter

__all__ = ["ceca", "eca"]

_CAPS: dict[str, Any] = dict(
    spatial_dims=(2,),
    data_formats=("channels_first",),
    gates=("sigmoid", "hard_sigmoid"),
    dtypes=("float32", "bfloat16", "float16"),
    gradients=True,
    weight_layout="(1, 1, k)",
    weight_dtype="input",  # module.to(dtype) casts the kernel too
)


def _batch_limit(case: Case) -> str | None:
    if case.shape[0] == 0:  # timm's reshape cannot infer -1 from zero elements
        return "batch 0: timm's x.mean((2, 3)).view(N, 1, -1) cannot infer -1 when N = 0"
    return None


class _Timm(TorchModuleAdapter):
    packages = ("torch", "timm")
    module_class: type = EcaModule

    def make_module(self, case: Case):
        return self.module_class(channels=None, kernel_size=case.k, gate_layer=case.gate)

    def limits(self, case: Case) -> str | None:
        return _batch_limit(case)


class _Eca(_Timm):
    name = "timm-eca"
    description = "timm.layers.EcaModule (zero padding)"
    capabilities = Capabilities(paddings=("zeros",), **_CAPS)
    module_class = EcaModule


class _Ceca(_Timm):
    name = "timm-ceca"
    description = "timm.layers.CecaModule (circular padding by F.pad)"
    capabilities = Capabilities(paddings=("circular",), **_CAPS)
    module_class = CecaModule

    def limits(self, case: Case) -> str | None:
        if (case.k - 1) // 2 > case.channels:  # F.pad(mode="circular") wraps at most once
            return (
                f"k = {case.k} > 2C + 1 = {2 * case.channels + 1}: F.pad(mode='circular') "
                "cannot wrap more than once"
            )
        return _batch_limit(case)


eca = _Eca()
ceca = _Ceca()


def inference(name: str, batch: int, size: int, seed: int = 0):
    """A benchmark floor: ``timm.create_model(name)`` in eval mode under ``no_grad`` on a random
    NCHW batch; returns the callable that runs it once (``eca-multi bench``'s "vs timm" rows)."""
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False).eval()
    x = torch.randn(batch, 3, size, size)

    def run():
        with torch.no_grad():
            return model(x)

    return run
