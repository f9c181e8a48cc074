"""The ECA-Net authors' eca_layer (https://github.com/BangguWu/ECANet, models/eca_module.py, MIT),
transcribed as a test oracle. ``channel`` is unused there too."""

from __future__ import annotations

from torch import nn


class OfficialEcaLayer(nn.Module):
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
