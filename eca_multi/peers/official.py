"""The ECA-Net authors' ``eca_layer`` as a conformance peer.

``EcaLayer`` is the published module (https://github.com/BangguWu/ECANet,
``models/eca_module.py``, MIT), transcribed with its semantics unchanged: ``AdaptiveAvgPool2d(1)``,
``Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)`` over the channel axis, sigmoid. ``channel``
is unused there too. 2-D channels_first, zero padding and the sigmoid only.
"""

from __future__ import annotations

from torch import nn

from ..conformance.cases import Case
from ..conformance.impl import Capabilities
from ._torch import TorchModuleAdapter

__all__ = ["EcaLayer", "adapter"]


class EcaLayer(nn.Module):
    """Constructs an ECA module (the authors' ``eca_layer``)."""

    def __init__(self, channel: int, k_size: int = 3) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        y = self.avg_pool(x)
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        y = self.sigmoid(y)
        return x * y.expand_as(x)


class _Official(TorchModuleAdapter):
    name = "official"
    description = "ECA-Net's eca_layer (BangguWu/ECANet, models/eca_module.py)"
    capabilities = Capabilities(
        spatial_dims=(2,),
        data_formats=("channels_first",),
        paddings=("zeros",),
        gates=("sigmoid",),
        dtypes=("float32", "bfloat16", "float16"),
        gradients=True,
        weight_layout="(1, 1, k)",
        weight_dtype="input",  # module.to(dtype) casts the kernel too
    )

    def make_module(self, case: Case) -> nn.Module:
        return EcaLayer(case.channels, k_size=case.k)


adapter = _Official()
