"""The paper's channel-attention family in Keras 3: each variant alone, and inside ECA-ResNet-50.

One argument picks the attention of every block (``attention=``); its parameter cost is the
variant's formula summed over the 16 bottlenecks (:func:`eca_multi.archs.attention_params`).
Runs on any Keras backend (``KERAS_BACKEND=tensorflow|jax|torch``).

Run: python examples/keras_family_example.py
"""

from __future__ import annotations

import keras
import numpy as np

from eca_multi import archs
from eca_multi.family import ATTENTIONS
from eca_multi.keras import export_canonical, make_attention
from eca_multi.keras.io import export_canonical_model
from eca_multi.keras.models import create_model


def main() -> None:
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).standard_normal((2, 14, 14, 256)).astype(np.float32)
    per_kind = {"se_gc": {"groups": 4}}  # SE-GC needs G; the others have defaults
    for kind in ATTENTIONS:
        layer = make_attention(kind, 256, data_format="channels_last", **per_kind.get(kind, {}))
        shapes = {k: v.shape for k, v in export_canonical(layer).items()}  # torch names / layouts
        print(f"{layer!r:70s} {layer.count_params():>7,} params  {shapes}")
        assert tuple(layer(x).shape) == x.shape

    plain = create_model("eca_resnet50", 10, attention=None).count_params()
    print(f"\nResNet-50 (10 classes), no attention: {plain:,} parameters (backend "
          f"{keras.backend.backend()})")  # fmt: skip
    for kind in ATTENTIONS:
        model = create_model("eca_resnet50", 10, attention=kind)
        extra = model.count_params() - plain
        assert extra == archs.attention_params("eca_resnet50", kind)
        print(f"  attention={kind!r:10s} +{extra:>11,} parameters  "
              f"({model.get_layer('layer1-0-eca')!r})")  # fmt: skip
    # timm's SE width (C/16 rounded to a multiple of 8) under timm's attribute name "se": the
    # canonical keys of timm's seresnet50t, ready for the torch model or a timm checkpoint
    se = create_model("ecaresnet50t", 10, attention="se", attention_kwargs={"rd_divisor": 8})
    state = export_canonical_model(se)
    print(f"\necaresnet50t with SE: {len(state)} canonical tensors, e.g. "
          f"layer1.0.se.fc1.weight {state['layer1.0.se.fc1.weight'].shape}")  # fmt: skip


if __name__ == "__main__":
    main()
