"""Keras preprocessing layers for timm's eval transform of a ported model (its pretrained config).

    from eca_multi.keras.preprocess import preprocess_layers
    prep = preprocess_layers(info["pretrained_cfg"], image_size=(480, 640))
    logits = model(prep(images_uint8_nhwc))  # (N, 480, 640, 3) -> (N, 256, 256, 3) normalized

The numbers come from :meth:`eca_multi.preprocess.PretrainedConfig.eval_transform`: ``Resizing``
to the size timm's ``Resize`` gives an image of ``image_size`` (shortest side to
``floor(size / crop_pct)``), with ``antialias=True``; ``Cropping2D`` by torchvision's center-crop
offsets; ``Rescaling(1 / 255)``; ``Normalization(mean, std ** 2)``. NOTE: Keras resizes in float
(TF / JAX kernels), Pillow in uint8 with rounding between its passes, so the result is close to
timm's, not bit-equal (tests: mean abs difference < 0.01 after normalization, up to ~0.3 at a
few pixels where bicubic overshoots, which Pillow clips to 0..255);
:func:`eca_multi.preprocess.preprocess` is the exact NumPy path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import layers

from ..preprocess import PretrainedConfig

__all__ = ["preprocess_layers"]

# timm (Pillow) interpolation -> Keras Resizing's; Pillow's hamming has no Keras counterpart
_INTERPOLATIONS = {
    "bicubic": "bicubic",
    "bilinear": "bilinear",
    "nearest": "nearest",
    "lanczos": "lanczos3",
    "box": "area",
}


def preprocess_layers(
    cfg: Any,
    image_size: Sequence[int],
    data_format: str | None = None,
    use_test_size: bool = False,
) -> keras.Sequential:
    """timm's eval preprocessing for images of one size, as Keras layers.

    Args:
        cfg: anything :meth:`~eca_multi.preprocess.PretrainedConfig.resolve` takes (a port's
            info, a file's metadata, the ``pretrained_cfg`` dict).
        image_size: (H, W) of the input images (the resize depends on their aspect).
        data_format: "channels_last" / "channels_first" (default: Keras' image data format).
        use_test_size: timm's ``use_test_size``.

    Input shape:
        (N, H, W, C) channels_last or (N, C, H, W) channels_first; uint8 or float in [0, 255].

    Output shape:
        (N, crop_h, crop_w, C) or (N, C, crop_h, crop_w), float32, normalized.

    Raises:
        ValueError: an interpolation Keras has no counterpart for (hamming), or an unsupported
            crop mode.
    """
    t = PretrainedConfig.resolve(cfg).eval_transform(use_test_size)
    if t.interpolation not in _INTERPOLATIONS:
        raise ValueError(
            f"interpolation {t.interpolation!r} has no Keras Resizing counterpart; "
            "use eca_multi.preprocess.preprocess"
        )
    data_format = data_format or keras.config.image_data_format()
    rh, rw = t.resize_size(image_size)
    (ch, cw), (top, left) = t.crop_size, t.crop_box((rh, rw))
    if top < 0 or left < 0:
        raise ValueError(f"the crop {t.crop_size} is larger than the resized image {(rh, rw)}")
    axis = -1 if data_format == "channels_last" else 1
    return keras.Sequential(
        [
            layers.Resizing(
                rh, rw, _INTERPOLATIONS[t.interpolation], antialias=True, data_format=data_format
            ),
            # torchvision's offsets (round half to even), not CenterCrop's floor
            layers.Cropping2D(((top, rh - ch - top), (left, rw - cw - left)), data_format),
            layers.Rescaling(1.0 / 255),  # ToTensor
            layers.Normalization(axis=axis, mean=list(t.mean), variance=[s * s for s in t.std]),
        ],
        name="timm_eval_preprocess",
    )
