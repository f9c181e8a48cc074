"""The paper's channel-attention family in Flax NNX: each variant alone, and inside ECA-ResNet-50.

One argument picks the attention of every block (``attention=``); its parameter cost is the
variant's formula summed over the 16 bottlenecks (:func:`eca_multi.archs.attention_params`).
Parameter counts come from :func:`abstract_model` (shapes only, no random init); one small
model with SE is built for real and differentiated.

Run: python examples/flax_family_example.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from eca_multi import archs
from eca_multi.family import ATTENTIONS
from eca_multi.flax import export_canonical, make_attention
from eca_multi.flax.models import abstract_model, create_model


def _count(model: nnx.Module) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def main() -> None:
    x = jax.random.normal(jax.random.key(0), (2, 14, 14, 256))  # NHWC, Flax's default
    per_kind = {"se_gc": {"groups": 4}}  # SE-GC needs G; the others have defaults
    for kind in ATTENTIONS:
        layer = make_attention(kind, 256, rngs=nnx.Rngs(0), **per_kind.get(kind, {}))
        shapes = {k: tuple(v.shape) for k, v in export_canonical(layer).items()}
        print(f"{layer.config.describe():70s} {_count(layer):>7,} params  {shapes}")
        assert layer(x).shape == x.shape

    plain = _count(abstract_model("eca_resnet50", 10, attention=None))
    print(f"\nResNet-50 (10 classes), no attention: {plain:,} parameters")
    for kind in ATTENTIONS:
        extra = _count(abstract_model("eca_resnet50", 10, attention=kind)) - plain
        assert extra == archs.attention_params("eca_resnet50", kind)
        print(f"  attention={kind!r:10s} +{extra:>11,} parameters")

    model = create_model("eca_resnet18", 10, attention="se")  # a real one: forward and backward
    images = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))

    def loss_fn(m):
        return jnp.mean(m(images) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    g = grads["layer1"][0]["eca"]["fc1"]["kernel"][...]
    print(f"\neca_resnet18 with SE: loss {float(loss):.4f}, |d fc1| {float(jnp.abs(g).max()):.2e}")


if __name__ == "__main__":
    main()
