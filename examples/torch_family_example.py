"""The paper's channel-attention family in PyTorch: each variant alone, and inside ECA-ResNet-50.

One argument picks the attention of every block (``attention=``); its parameter cost is the
variant's formula summed over the 16 bottlenecks (:func:`eca_multi.archs.attention_params`).

Run: python examples/torch_family_example.py
"""

from __future__ import annotations

import torch

from eca_multi import archs
from eca_multi.family import ATTENTIONS
from eca_multi.torch import create_model, export_canonical, make_attention


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 256, 14, 14)
    per_kind = {"se_gc": {"groups": 4}}  # SE-GC needs G; the others have defaults
    for kind in ATTENTIONS:
        layer = make_attention(kind, 256, **per_kind.get(kind, {}))
        shapes = {k: tuple(v.shape) for k, v in export_canonical(layer).items()}
        print(f"{layer!r:70s} {_count(layer):>7,} params  {shapes}")
        assert layer(x).shape == x.shape

    plain = _count(create_model("eca_resnet50", num_classes=10, attention=None))
    print(f"\nResNet-50 (10 classes), no attention: {plain:,} parameters")
    for kind in ATTENTIONS:
        model = create_model("eca_resnet50", num_classes=10, attention=kind)
        extra = _count(model) - plain
        assert extra == archs.attention_params("eca_resnet50", kind)
        print(f"  attention={kind!r:10s} +{extra:>11,} parameters  ({model.layer1[0].eca!r})")
    # timm's SE width (C/16 rounded to a multiple of 8) and timm's attribute name: an SE-ResNet
    # whose state_dict is timm's seresnet50t's
    se = create_model("ecaresnet50t", 10, attention="se", attention_kwargs={"rd_divisor": 8})
    loss = se(torch.randn(2, 3, 64, 64)).square().mean()
    loss.backward()
    print(f"\necaresnet50t with SE (timm seresnet50t keys): loss {loss.item():.4f}, backward ok")


if __name__ == "__main__":
    main()
