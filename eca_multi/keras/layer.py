"""ECA (Efficient Channel Attention) as a Keras 3 layer, plus its canonical-weight adapter.

Paper: Wang et al., "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
CVPR 2020, https://arxiv.org/abs/1910.03151. The block is specified once in :mod:`eca_multi.spec`
and :mod:`eca_multi.reference`; this file only creates the kernel and runs the forward pass with
``keras.ops``, so it runs unchanged on the tensorflow, jax and torch Keras backends.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
from keras import ops

from ..spec import make_config
from ..weights.layouts import Layout, to_canonical, to_native
from ..weights.schema import check_state, eca_schema
from . import _ops

__all__ = ["ECA", "export_canonical", "load_canonical"]


@keras.saving.register_keras_serializable(package="eca_multi")
class ECA(_ops.Gated):
    """Efficient Channel Attention: gate each channel by a k-tap 1-D conv over pooled channels.

    ``out = x * gate(conv1d_k(mean_spatial(x)))``; the pooled vector is padded with zeros (paper)
    or circularly (timm's CECA), the conv is a cross-correlation without bias.

    Dtypes: the output keeps the input's dtype (float32, bfloat16, float16, float64). Keras
    normally casts floating inputs to the layer's compute dtype before ``call``; this layer turns
    that off (``_convert_input_args = False``, a private switch: :mod:`eca_multi.keras._private`)
    and converts inputs itself with ``keras.ops.convert_to_tensor`` (no dtype), so integer inputs
    reach the shared check and raise ``TypeError``. The pooled vector, conv and gate run in float32
    (float64 for float64 input); the kernel is read without autocast, so under the
    ``"mixed_bfloat16"`` policy it stays float32 while bf16 in gives bf16 out. NumPy inputs are
    accepted positionally and keep their dtype where the backend has it (JAX without x64 turns
    float64 into float32).

    Args:
        channels: channel count C; None accepts any C (then ``kernel_size`` is required).
        kernel_size: odd k; None derives it from ``channels`` by the paper's rule.
        gamma: the rule's gamma (paper: 2).
        b: the rule's b (paper: 1).
        min_kernel_size: smallest k the rule may give (timm: 3).
        padding: ``"zeros"`` (paper) or ``"circular"`` (channel indices modulo C).
        gate: ``"sigmoid"`` or ``"hard_sigmoid"`` (``relu6(z + 3) / 6``).
        data_format: ``"channels_first"`` or ``"channels_last"``; None means
            ``keras.config.image_data_format()`` (the Keras convention; torch defaults to
            channels_first, Flax to channels_last).
        **kwargs: base layer arguments (``name``, ``dtype``, ``trainable``).

    Input shape:
        ``(N, C, *spatial)`` (channels_first) or ``(N, *spatial, C)`` (channels_last), with 1 to 3
        spatial axes; N may be 0 or None.

    Output shape:
        Same as the input, same dtype.

    Example:
        >>> layer = ECA(channels=64, data_format="channels_last")  # k = 3 by the rule
        >>> tuple(layer(keras.random.normal((2, 7, 7, 64))).shape)
        (2, 7, 7, 64)
    """

    def __init__(
        self,
        channels: int | None = None,
        kernel_size: int | None = None,
        gamma: float = 2,
        b: float = 1,
        min_kernel_size: int = 1,
        padding: str = "zeros",
        gate: str = "sigmoid",
        data_format: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        data_format = _ops.Gated.data_format_or_default(data_format)
        self._configure(
            make_config(
                channels, kernel_size, gamma, b, min_kernel_size, padding, gate, data_format
            )
        )

    def build(self, input_shape: tuple | None = None) -> None:
        """Create the (k, 1, 1) kernel (Keras Conv1D layout); the input shape is not needed."""
        k = self.config.kernel_size
        bound = 1.0 / math.sqrt(k)  # torch Conv1d's default init, in every backend
        self.kernel = self.add_weight(
            name="kernel",
            shape=(k, 1, 1),
            initializer=keras.initializers.RandomUniform(-bound, bound),
            autocast=False,  # the attention path casts it to >= float32 itself
        )

    def mix(self, y, adt: str):
        """The k-tap cross-correlation (no flip, no bias) of the pooled (N, C) vector."""
        k = self.config.kernel_size
        w = ops.reshape(ops.cast(self.kernel, adt), (k,))
        return _ops.channel_taps(y, w, k, self.config.padding)


def _ensure_built(layer: ECA) -> None:
    if not layer.built:  # the kernel shape depends only on the config
        layer.build(None)


def export_canonical(layer: ECA) -> dict[str, np.ndarray]:
    """The layer's weights in the canonical format: ``{"conv.weight": float32 (1, 1, k)}``."""
    _ensure_built(layer)
    kernel = np.asarray(ops.convert_to_numpy(layer.kernel.value), dtype=np.float32)
    return {"conv.weight": to_canonical(kernel, Layout.CONV1D)}


def load_canonical(layer: ECA, state: Mapping[str, np.ndarray], strict: bool = True) -> None:
    """Load canonical weights into ``layer`` (built on demand).

    Raises:
        WeightMismatchError: a wrong kernel size, or (``strict``) missing / unexpected keys.
    """
    schema = eca_schema(layer.config)
    check_state(schema, state, strict=strict, where=f"Keras {layer.config.describe()}")
    _ensure_built(layer)
    if "conv.weight" in state:
        layer.kernel.assign(to_native(np.asarray(state["conv.weight"]), Layout.CONV1D))
