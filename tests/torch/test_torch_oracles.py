"""The torch ECA against real oracles: timm's EcaModule / CecaModule and the official eca_layer.

Weights move both ways with plain ``load_state_dict`` (same key and layout, strict), and the
outputs and gradients must be bit-equal: our layer runs the same float32 ops as timm's.
"""

from __future__ import annotations

import pytest
import torch
from timm.layers import CecaModule, EcaModule
from torch import nn

from eca_multi.peers.official import EcaLayer as OfficialEcaLayer
from eca_multi.torch import ECA


def _fwd_bwd(module: nn.Module, x: torch.Tensor, g: torch.Tensor):
    x = x.detach().requires_grad_(True)
    y = module(x)
    dx, dw = torch.autograd.grad(y, (x, module.conv.weight), g)
    return {"y": y.detach(), "dx": dx, "dw": dw}


def _max_diffs(a: dict, b: dict) -> str:
    return ", ".join(f"{n}: max_abs={float((a[n] - b[n]).detach().abs().max()):.2e}" for n in a)


@pytest.mark.parametrize(
    "padding,timm_cls",
    [("zeros", EcaModule), ("circular", CecaModule)],
    ids=["EcaModule", "CecaModule"],
)
@pytest.mark.parametrize("channels", [8, 64, 256, 2048])
@pytest.mark.parametrize("direction", ["timm_to_ours", "ours_to_timm"])
def test_equals_timm(channels, padding, timm_cls, direction):
    torch.manual_seed(channels)
    theirs = timm_cls(channels)  # timm's rule: k = max(paper rule, 3)
    ours = ECA(channels=channels, min_kernel_size=3, padding=padding)
    assert ours.conv.weight.shape == theirs.conv.weight.shape, (
        f"C={channels}: k={ours.config.kernel_size}, timm {tuple(theirs.conv.weight.shape)}"
    )
    src, dst = (theirs, ours) if direction == "timm_to_ours" else (ours, theirs)
    dst.load_state_dict(src.state_dict(), strict=True)
    x, g = torch.randn(3, channels, 5, 6), torch.randn(3, channels, 5, 6)
    a, b = _fwd_bwd(ours, x, g), _fwd_bwd(theirs, x, g)
    same = all(torch.equal(a[n], b[n]) for n in a)
    assert same, f"torch ECA vs timm {timm_cls.__name__} C={channels}: {_max_diffs(a, b)}"


@pytest.mark.parametrize("channels,k", [(64, 3), (256, 5), (2048, 7), (512, 5)])
def test_official_eca_layer_weights_load_strict(channels, k):
    """The official state dict loads strictly. y and dw are bit-equal; dx differs by ~1 ulp
    because AdaptiveAvgPool2d's backward spreads g / (H*W) while mean's backward computes it in
    another order (measured max_abs 6e-8 to 2.4e-7), so dx is held to float32 rounding instead."""
    torch.manual_seed(k)
    official = OfficialEcaLayer(channels, k)
    ours = ECA(kernel_size=k)  # the official code passes k per stage, not the rule
    ours.load_state_dict(official.state_dict(), strict=True)
    x, g = torch.randn(2, channels, 7, 7), torch.randn(2, channels, 7, 7)
    a, b = _fwd_bwd(ours, x, g), _fwd_bwd(official, x, g)
    where = f"official eca_layer C={channels} k={k}"
    assert torch.equal(a["y"], b["y"]) and torch.equal(a["dw"], b["dw"]), (
        f"{where}: {_max_diffs(a, b)}"
    )
    scale, d = float(b["dx"].abs().max()), float((a["dx"] - b["dx"]).abs().max())
    assert d <= 4 * torch.finfo(torch.float32).eps * scale, (
        f"{where} dx: max_abs={d:.2e} > 4 eps x max|dx| = {4 * 1.19e-7 * scale:.2e}"
    )
