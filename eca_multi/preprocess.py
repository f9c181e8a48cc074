"""timm's pretrained config and the eval preprocessing it implies, framework-free (NumPy only).

A port from a hub repository (``eca-multi port hf-hub:timm/...``) carries timm's
``pretrained_cfg`` (input size, interpolation, crop_pct / crop_mode, mean / std, num_classes,
label names) into every output's metadata, and reading an output gives it back
(``read_source(...)[1]["pretrained_cfg"]``). This module is the one place that knows how it is
stored (:func:`metadata_entries`, :func:`cfg_from_metadata`) and what it means:

    cfg = PretrainedConfig.resolve(info)          # info / a file's metadata / the dict itself
    t = cfg.eval_transform()                      # timm's eval transform, as numbers
    t.resize_size((480, 640)), t.crop_size        # (292, 389), (256, 256) for ecaresnet26t
    x = preprocess(image_uint8_hwc, cfg)          # float32 (3, 256, 256), as timm makes it

:func:`preprocess` is a NumPy reference of ``timm.data.create_transform(
**timm.data.resolve_data_config({}, pretrained_cfg=cfg))`` at eval time (center / squash crop):
torchvision's ``Resize`` (shortest side to ``floor(size / crop_pct)``) and ``CenterCrop``, then
``ToTensor`` and ``Normalize``. The resize is Pillow's when Pillow is installed (then the output
equals timm's; tests compare both on a photo), else a NumPy re-implementation of Pillow's
resampling (its filters, their support widening when downscaling, its 22-bit fixed-point
coefficients and the uint8 rounding between passes). Torch users can use timm itself; Keras users
:func:`eca_multi.keras.preprocess.preprocess_layers` (Keras preprocessing layers, close but not
bit-equal); Flax users this function (or ``jax.image.resize(..., antialias=True)``, close but not
bit-equal). README ("Preprocessing") shows all three.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, cast

import numpy as np

__all__ = [
    "DEFAULT_CROP_PCT",
    "IMAGENET_DEFAULT_MEAN",
    "IMAGENET_DEFAULT_STD",
    "INTERPOLATIONS",
    "METADATA_KEY",
    "EvalTransform",
    "PretrainedConfig",
    "cfg_from_metadata",
    "metadata_entries",
    "preprocess",
    "resize",
]

# timm.data.constants / timm.data.resolve_data_config's defaults
IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
DEFAULT_CROP_PCT = 0.875
DEFAULT_CROP_MODE = "center"
DEFAULT_INTERPOLATION = "bicubic"
DEFAULT_INPUT_SIZE = (3, 224, 224)
METADATA_KEY = "pretrained_cfg"  # the metadata entry (a JSON string) in every output format


# ---------------------------------------------------------------------------------------------
# storage: one str -> str metadata entry, the same in every format


def _jsonable(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy in JSON types (tuples -> lists): what every format gives back."""
    out: dict[str, Any] = json.loads(json.dumps(dict(cfg)))
    return out


def metadata_entries(cfg: Mapping[str, Any] | PretrainedConfig | None) -> dict[str, str]:
    """``{"pretrained_cfg": JSON}`` for a file's str -> str metadata; ``{}`` for None."""
    if cfg is None:
        return {}
    if isinstance(cfg, PretrainedConfig):
        cfg = cfg.to_dict()
    return {METADATA_KEY: json.dumps(_jsonable(cfg), sort_keys=True)}


def cfg_from_metadata(meta: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The pretrained config stored by :func:`metadata_entries` (None when there is none).

    Raises:
        ValueError: the entry is not a JSON object.
    """
    if not meta or meta.get(METADATA_KEY) is None:
        return None
    value = meta[METADATA_KEY]
    try:
        cfg = json.loads(value) if isinstance(value, (str, bytes)) else _jsonable(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata {METADATA_KEY!r} is not JSON ({e})") from e
    if not isinstance(cfg, dict):
        raise ValueError(f"metadata {METADATA_KEY!r} is not a JSON object: {value!r:.80}")
    return cfg


# ---------------------------------------------------------------------------------------------
# the config


@dataclass(frozen=True)
class PretrainedConfig:
    """timm's ``pretrained_cfg``: the fields preprocessing needs, and every other key as given.

    A field is None when the config does not set it (timm's defaults apply in
    :meth:`eval_transform`); ``from_dict(d).to_dict()`` gives ``d`` back (in JSON types).
    """

    input_size: tuple[int, int, int] | None = None  # (C, H, W)
    interpolation: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    crop_pct: float | None = None
    crop_mode: str | None = None
    num_classes: int | None = None
    label_names: Any = None  # list (or dict id -> name) of class names, if present
    test_input_size: tuple[int, int, int] | None = None
    test_crop_pct: float | None = None
    # tag, hf_hub_id, pool_size, first_conv, ...
    extra: dict[str, Any] = field(default_factory=dict)

    _TUPLES = ("input_size", "mean", "std", "test_input_size")

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> PretrainedConfig:
        """From a ``pretrained_cfg`` dict (timm's, or one read back from a file)."""
        names = {f.name for f in fields(cls)} - {"extra"}
        known: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in _jsonable(cfg).items():
            if key in names and value is not None:
                known[key] = tuple(value) if key in cls._TUPLES else value
            else:
                extra[key] = value
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-able dict (lists for tuples), only the keys that were set."""
        out = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "extra" and getattr(self, f.name) is not None
        }
        return _jsonable({**out, **self.extra})

    @classmethod
    def resolve(cls, source: Any) -> PretrainedConfig:
        """The config from whatever holds it: a :class:`PretrainedConfig`, a port's ``info``
        (``info["pretrained_cfg"]``), a file's metadata (``{"pretrained_cfg": JSON}``) or the
        ``pretrained_cfg`` dict itself.

        Raises:
            ValueError: ``source`` holds no pretrained config.
        """
        if isinstance(source, PretrainedConfig):
            return source
        if isinstance(source, Mapping):
            if METADATA_KEY in source and source[METADATA_KEY] is not None:
                # a dict: the entry is there and not None
                return cls.from_dict(cast(dict[str, Any], cfg_from_metadata(source)))
            if isinstance(source.get("metadata"), Mapping):  # read_container's info
                found = cfg_from_metadata(source["metadata"])
                if found is not None:
                    return cls.from_dict(found)
            if "input_size" in source or "mean" in source or "crop_pct" in source:
                return cls.from_dict(source)
        raise ValueError(
            "no pretrained config found (ports from hf-hub: names record one as "
            f"{METADATA_KEY!r}; files ported from plain checkpoints have none)"
        )

    def summary(self) -> str:
        """One line: input size, interpolation, crop, mean / std (timm's defaults filled in)."""
        t = self.eval_transform()
        size = "x".join(str(int(v)) for v in (self.input_size or DEFAULT_INPUT_SIZE))
        nums: Callable[[Sequence[float]], str] = lambda v: ",".join(f"{x:.4g}" for x in v)
        labels = ", label names" if self.label_names else ""
        return (
            f"input {size}, {t.interpolation}, crop_pct {t.crop_pct:g} ({t.crop_mode}), "
            f"mean {nums(t.mean)}, std {nums(t.std)}{labels}"
        )

    def eval_transform(self, use_test_size: bool = False) -> EvalTransform:
        """timm's eval transform for this config (``resolve_data_config`` + ``create_transform``
        with ``is_training=False``), as numbers.

        Args:
            use_test_size: take ``test_input_size`` / ``test_crop_pct`` where set (timm's
                ``use_test_size=True``).
        """
        size = self.input_size or DEFAULT_INPUT_SIZE
        crop_pct = self.crop_pct or DEFAULT_CROP_PCT
        if use_test_size:
            size = self.test_input_size or size
            crop_pct = self.test_crop_pct or crop_pct
        crop = (int(size[1]), int(size[2]))
        return EvalTransform(
            crop_size=crop,
            scale_size=(math.floor(crop[0] / crop_pct), math.floor(crop[1] / crop_pct)),
            crop_pct=float(crop_pct),
            crop_mode=self.crop_mode or DEFAULT_CROP_MODE,
            interpolation=self.interpolation or DEFAULT_INTERPOLATION,
            mean=tuple(float(m) for m in (self.mean or IMAGENET_DEFAULT_MEAN)),
            std=tuple(float(s) for s in (self.std or IMAGENET_DEFAULT_STD)),
        )


@dataclass(frozen=True)
class EvalTransform:
    """timm's eval transform as numbers (``transforms_imagenet_eval``).

    ``center`` (timm's default): resize so the image covers ``scale_size`` keeping its aspect
    (square targets: shortest side to ``scale_size[0]``), then center-crop ``crop_size``.
    ``squash``: resize to ``scale_size`` exactly, then center-crop. Then ``x / 255``, minus
    ``mean``, over ``std``, channels first.
    """

    crop_size: tuple[int, int]  # (H, W) the model's input
    scale_size: tuple[int, int]  # floor(crop / crop_pct) per side
    crop_pct: float
    crop_mode: str  # "center" or "squash" ("border" is not supported here)
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.crop_mode not in ("center", "squash"):
            raise ValueError(
                f"crop_mode {self.crop_mode!r} is not supported by eca_multi.preprocess "
                "(center, squash); use timm.data.create_transform"
            )
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation {self.interpolation!r}; supported: {', '.join(INTERPOLATIONS)}"
            )

    def resize_size(self, image_hw: Sequence[int]) -> tuple[int, int]:
        """(H, W) an image of ``image_hw`` is resized to before the crop."""
        h, w = int(image_hw[0]), int(image_hw[1])
        if self.crop_mode == "squash":
            return self.scale_size
        if self.scale_size[0] == self.scale_size[1]:  # torchvision Resize(int): shortest side
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = self.scale_size[0], int(self.scale_size[0] * long / short)
            return (new_long, new_short) if w <= h else (new_short, new_long)
        # timm ResizeKeepRatio(longest=0): the side that needs the least scaling decides
        ratio = min(h / self.scale_size[0], w / self.scale_size[1])
        return round(h / ratio), round(w / ratio)

    def crop_box(self, resized_hw: Sequence[int]) -> tuple[int, int]:
        """(top, left) of torchvision's center crop (negative: zero padding, as torchvision)."""
        (h, w), (ch, cw) = resized_hw, self.crop_size
        return int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))


# ---------------------------------------------------------------------------------------------
# Pillow's resampling in NumPy (libImaging/Resample.c; nearest: Geometry.c ImagingScaleAffine)


def _bicubic(x: float) -> float:
    a = -0.5  # Pillow's (and torchvision's PIL path) cubic; NOTE OpenCV / TF use -0.75 / -0.5
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


_F054, _F046 = float(np.float32(0.54)), float(np.float32(0.46))  # Pillow's 0.54f, 0.46f


def _hamming(x: float) -> float:
    x = abs(x)
    if x == 0.0:
        return 1.0
    if x >= 1.0:
        return 0.0
    x = x * math.pi
    return math.sin(x) / x * (_F054 + _F046 * math.cos(x))


# name -> (support, filter), as Pillow defines them
_FILTERS: dict[str, tuple[float, Callable[[float], float]]] = {
    "box": (0.5, lambda x: 1.0 if -0.5 < x <= 0.5 else 0.0),
    "bilinear": (1.0, lambda x: max(0.0, 1.0 - abs(x))),
    "hamming": (1.0, _hamming),
    "bicubic": (2.0, _bicubic),
    "lanczos": (3.0, lambda x: _sinc(x) * _sinc(x / 3) if -3.0 <= x < 3.0 else 0.0),
}
INTERPOLATIONS = ("nearest", *_FILTERS)
_PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point coefficients for 8-bit images


def _coefficients(in_size: int, out_size: int, interpolation: str) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc``: (first tap, int64 taps)."""
    support, fn = _FILTERS[interpolation]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)  # downscaling widens the filter (antialiasing)
    support = support * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    ss = 1.0 / filterscale
    first = np.zeros(out_size, np.int64)
    taps = np.zeros((out_size, ksize), np.int64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        w = [fn((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        ww = 0.0
        for v in w:  # in order, as Pillow sums
            ww += v
        k = [v / ww if ww != 0.0 else v for v in w]
        one = 1 << _PRECISION_BITS
        taps[xx, :xmax] = [int(-0.5 + v * one) if v < 0 else int(0.5 + v * one) for v in k]
        first[xx] = xmin
    return first, taps


def _resample_axis(img: np.ndarray, out_size: int, axis: int, interpolation: str) -> np.ndarray:
    """One pass along ``axis`` (0: rows, 1: columns) of a uint8 (H, W, C) image, rounded to
    uint8 as Pillow does between its two passes."""
    first, taps = _coefficients(img.shape[axis], out_size, interpolation)
    src = np.moveaxis(img, axis, 0).astype(np.int64)
    acc = np.full((out_size, *src.shape[1:]), 1 << (_PRECISION_BITS - 1), np.int64)
    last = src.shape[0] - 1
    for t in range(taps.shape[1]):  # taps past a pixel's window are 0
        rows = src[np.minimum(first + t, last)]
        acc += rows * taps[:, t].reshape(-1, *([1] * (src.ndim - 1)))
    out = np.clip(acc >> _PRECISION_BITS, 0, 255).astype(np.uint8)
    return np.moveaxis(out, 0, axis)


def _nearest_index(in_size: int, out_size: int) -> np.ndarray:
    scale = in_size / out_size  # Pillow steps a float coordinate: xo += a[0]
    steps = np.full(out_size, scale)
    steps[0] = scale * 0.5
    coords = np.cumsum(steps)  # sequential, like the C loop
    return np.clip(np.where(coords < 0, -1, coords.astype(np.int64)), 0, in_size - 1)


_PIL_FILTERS = ("nearest", "lanczos", "bilinear", "bicubic", "box", "hamming")  # Pillow's ids


def _resize_numpy(image: np.ndarray, out_h: int, out_w: int, interpolation: str) -> np.ndarray:
    if interpolation == "nearest":
        rows, cols = _nearest_index(image.shape[0], out_h), _nearest_index(image.shape[1], out_w)
        picked: np.ndarray = image[rows][:, cols].copy()
        return picked
    out = image if image.ndim == 3 else image[:, :, None]
    if out_w != out.shape[1]:  # Pillow's classic order: horizontal pass, then vertical
        out = _resample_axis(out, out_w, 1, interpolation)
    if out_h != out.shape[0]:
        out = _resample_axis(out, out_h, 0, interpolation)
    return out if image.ndim == 3 else out[:, :, 0]


def _resize_pillow(image: np.ndarray, out_h: int, out_w: int, interpolation: str) -> np.ndarray:
    from PIL import Image

    resample = Image.Resampling(_PIL_FILTERS.index(interpolation))
    return np.asarray(Image.fromarray(image).resize((out_w, out_h), resample))


def _pillow_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("PIL") is not None


def resize(
    image: np.ndarray,
    size: Sequence[int],
    interpolation: str = "bicubic",
    backend: str = "auto",
) -> np.ndarray:
    """Resize a uint8 (H, W, C) or (H, W) image to ``size`` = (H, W) as Pillow's
    ``Image.resize((W, H), resample)`` does (what torchvision's ``Resize`` runs on PIL images).

    Args:
        image: uint8 (H, W, C) or (H, W).
        size: (H, W) of the result.
        interpolation: one of :data:`INTERPOLATIONS` (timm's names).
        backend: "pillow" (Pillow itself), "numpy" (this module's re-implementation, no
            dependency) or "auto" (Pillow when installed, else NumPy).

    The NumPy resampler reproduces Pillow's filters, coefficients and rounding exactly; when
    both axes change it runs the horizontal pass first, as Pillow always did. NOTE: recent Pillow
    releases pick the vertical pass first for some size pairs (a speed choice); the two orders
    differ by a few uint8 levels at a few pixels (the intermediate is rounded to uint8).

    Raises:
        ValueError: not uint8, not 2-D / 3-D, an unknown interpolation or backend.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"resize takes a uint8 (H, W[, C]) image, got {image.dtype} {image.shape}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation {interpolation!r}; supported: {', '.join(INTERPOLATIONS)}")
    if backend not in ("auto", "pillow", "numpy"):
        raise ValueError(f"backend must be 'auto', 'pillow' or 'numpy', got {backend!r}")
    out_h, out_w = int(size[0]), int(size[1])
    if (out_h, out_w) == image.shape[:2]:
        same: np.ndarray = image.copy()
        return same
    multiband_ok = image.ndim == 2 or image.shape[2] in (1, 3)  # Pillow: L or RGB, 8-bit
    if backend == "pillow" or (backend == "auto" and multiband_ok and _pillow_installed()):
        if image.ndim == 3 and image.shape[2] == 1:
            return _resize_pillow(image[:, :, 0], out_h, out_w, interpolation)[:, :, None]
        return _resize_pillow(image, out_h, out_w, interpolation)
    return _resize_numpy(image, out_h, out_w, interpolation)


def _center_crop(image: np.ndarray, transform: EvalTransform) -> np.ndarray:
    """torchvision's ``CenterCrop`` (zero-pads an image smaller than the crop, as it does)."""
    (ch, cw), (h, w) = transform.crop_size, image.shape[:2]
    if ch > h or cw > w:
        pad = ((ch - h) // 2 if ch > h else 0, (ch - h + 1) // 2 if ch > h else 0)
        pad_w = ((cw - w) // 2 if cw > w else 0, (cw - w + 1) // 2 if cw > w else 0)
        image = np.pad(image, (pad, pad_w, (0, 0)))
    top, left = transform.crop_box(image.shape[:2])
    return image[top : top + ch, left : left + cw]


def preprocess(
    image: np.ndarray,
    cfg: Any = None,
    *,
    use_test_size: bool = False,
    transform: EvalTransform | None = None,
    backend: str = "auto",
) -> np.ndarray:
    """timm's eval preprocessing of one RGB image, in NumPy: uint8 (H, W, C) -> float32 (C, h, w).

    Args:
        image: uint8 (H, W, C), RGB (what ``np.asarray(PIL.Image.open(f).convert("RGB"))``
            gives).
        cfg: anything :meth:`PretrainedConfig.resolve` takes (a port's info, a file's metadata,
            the ``pretrained_cfg`` dict).
        use_test_size: timm's ``use_test_size`` (``test_input_size`` / ``test_crop_pct``).
        transform: an :class:`EvalTransform` to use instead of the config's.
        backend: the resize's (:func:`resize`): "auto" (Pillow when installed: the same numbers
            as timm), "pillow" or "numpy".

    Output shape:
        (C, crop_h, crop_w) float32, normalized: the model's input (add the batch axis; NHWC
        frameworks transpose).
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(
            f"preprocess takes a uint8 (H, W, C) image, got {image.dtype} {image.shape}"
        )
    t = transform or PretrainedConfig.resolve(cfg).eval_transform(use_test_size)
    if image.shape[2] != len(t.mean):
        raise ValueError(f"image has {image.shape[2]} channels, the config {len(t.mean)}")
    resized = resize(image, t.resize_size(image.shape[:2]), t.interpolation, backend)
    x = _center_crop(resized, t)
    x = x.transpose(2, 0, 1).astype(np.float32) / np.float32(255)  # torchvision ToTensor
    mean = np.asarray(t.mean, np.float32)[:, None, None]  # Normalize: float32 (x - mean) / std
    std = np.asarray(t.std, np.float32)[:, None, None]
    return np.ascontiguousarray((x - mean) / std)
