"""timm's pretrained config and eval preprocessing (eca_multi.preprocess) against timm itself.

The oracle is timm's own transform, ``timm.data.create_transform(**resolve_data_config({},
pretrained_cfg=cfg))`` on a PIL image (torchvision Resize / CenterCrop / ToTensor / Normalize),
applied to a real photo (matplotlib's sample ``grace_hopper.jpg``, 600 x 512 RGB).

Tolerances: the default path (Pillow's resize) must equal timm's output (max abs <= 1e-6 after
normalization); the dependency-free NumPy resampler must equal Pillow bit for bit wherever the
pass order cannot differ (one axis) and stay within a few uint8 levels of timm overall (max abs
<= 0.1, mean abs <= 1e-3 after normalization); Keras' float resizing is close, not equal (mean
abs <= 0.01).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import require_backend

from eca_multi.preprocess import (
    INTERPOLATIONS,
    PretrainedConfig,
    cfg_from_metadata,
    metadata_entries,
    preprocess,
    resize,
)

# timm/ecaresnet26t.ra2_in1k's pretrained_cfg as its config.json stores it
CFG = {
    "tag": "ra2_in1k",
    "custom_load": False,
    "input_size": [3, 256, 256],
    "test_input_size": [3, 320, 320],
    "fixed_input_size": False,
    "interpolation": "bicubic",
    "crop_pct": 0.875,
    "test_crop_pct": 0.95,
    "crop_mode": "center",
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "num_classes": 1000,
    "pool_size": [8, 8],
    "first_conv": "conv1.0",
    "classifier": "fc",
    "license": "apache-2.0",
}
VARIANTS = {  # id -> overrides of CFG: every branch of timm's eval transform we reproduce
    "center": {},
    "squash": {"crop_mode": "squash"},
    "non_square": {"input_size": [3, 200, 320]},
    "bilinear_full": {"interpolation": "bilinear", "crop_pct": 1.0},
    "lanczos_224": {"input_size": [3, 224, 224], "interpolation": "lanczos"},
    "nearest": {"interpolation": "nearest", "crop_pct": 0.9},
    "box": {"interpolation": "box", "input_size": [3, 240, 240]},
    "hamming": {"interpolation": "hamming", "crop_pct": 0.95},
    "pad_squash": {"crop_pct": 1.2, "crop_mode": "squash"},  # resize smaller than the crop
}


@pytest.fixture(scope="module")
def photo():
    pil = pytest.importorskip("PIL.Image", reason="Pillow (timm's transforms) not installed")
    cbook = pytest.importorskip("matplotlib.cbook", reason="matplotlib's sample photo missing")
    image = pil.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    return image


def _timm(image, cfg, **kwargs):
    require_backend("torch")
    timm = require_backend("timm")
    data = timm.data.resolve_data_config({}, pretrained_cfg=cfg, **kwargs)
    return timm.data.create_transform(**data)(image).numpy()


# ---------------------------------------------------------------------------------------------
# the config and its metadata entry


def test_config_round_trips_through_dict_and_metadata():
    cfg = PretrainedConfig.from_dict(CFG)
    assert cfg.input_size == (3, 256, 256) and cfg.extra["tag"] == "ra2_in1k"
    assert cfg.to_dict() == CFG
    meta = metadata_entries(CFG)
    assert set(meta) == {"pretrained_cfg"} and isinstance(meta["pretrained_cfg"], str)
    assert cfg_from_metadata(meta) == CFG and metadata_entries(None) == {}
    assert cfg_from_metadata({"format": "pt"}) is None
    tupled = {**CFG, "mean": (0.5, 0.5, 0.5)}  # timm's in-memory cfg holds tuples
    assert cfg_from_metadata(metadata_entries(tupled))["mean"] == [0.5, 0.5, 0.5]
    for source in (meta, {"pretrained_cfg": CFG}, {"metadata": meta}, CFG, cfg):
        assert PretrainedConfig.resolve(source).to_dict() == CFG, source
    with pytest.raises(ValueError, match="no pretrained config"):
        PretrainedConfig.resolve({"format": "pt"})
    with pytest.raises(ValueError, match="not JSON"):
        cfg_from_metadata({"pretrained_cfg": "{oops"})
    assert json.loads(metadata_entries(cfg)["pretrained_cfg"]) == CFG


def test_eval_transform_numbers():
    t = PretrainedConfig.from_dict(CFG).eval_transform()
    assert t.crop_size == (256, 256) and t.scale_size == (292, 292)  # floor(256 / 0.875)
    assert t.interpolation == "bicubic" and t.mean == (0.485, 0.456, 0.406)
    assert t.resize_size((600, 512)) == (342, 292)  # shortest side -> 292
    assert t.resize_size((480, 640)) == (292, 389) and t.crop_box((292, 389)) == (18, 66)
    test = PretrainedConfig.from_dict(CFG).eval_transform(use_test_size=True)
    assert test.crop_size == (320, 320) and test.scale_size == (336, 336)  # floor(320 / 0.95)
    defaults = PretrainedConfig().eval_transform()  # timm's defaults
    assert defaults.crop_size == (224, 224) and defaults.scale_size == (256, 256)
    with pytest.raises(ValueError, match="crop_mode 'border'"):
        PretrainedConfig.from_dict({**CFG, "crop_mode": "border"}).eval_transform()


# ---------------------------------------------------------------------------------------------
# against timm on a photo


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_preprocess_equals_timm_transform(photo, variant):
    cfg = {**CFG, **VARIANTS[variant]}
    want = _timm(photo, cfg)
    got = preprocess(np.asarray(photo), cfg)
    assert got.dtype == np.float32 and got.shape == want.shape
    err = float(np.max(np.abs(got - want)))
    assert err <= 1e-6, f"preprocess/{variant}: max_abs={err:.2e} > atol=1e-06"


@pytest.mark.parametrize("landscape", [False, True], ids=["portrait", "landscape"])
def test_numpy_backend_is_close_to_timm(photo, landscape):
    from PIL import Image

    image = np.asarray(photo)
    if landscape:
        image = np.ascontiguousarray(image.transpose(1, 0, 2))
    want = _timm(Image.fromarray(image), CFG)
    got = preprocess(image, CFG, backend="numpy")
    d = np.abs(got - want)
    assert d.max() <= 0.1 and d.mean() <= 1e-3, f"max_abs={d.max():.2e} mean={d.mean():.2e}"


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_numpy_resize_equals_pillow_per_axis(photo, interpolation):
    """One axis at a time (where Pillow's pass order cannot matter): bit for bit."""
    image = np.asarray(photo)
    for size in [(600, 249), (600, 700), (293, 512), (1000, 512), (1, 512), (600, 3)]:
        want = resize(image, size, interpolation, backend="pillow")
        got = resize(image, size, interpolation, backend="numpy")
        assert np.array_equal(got, want), (interpolation, size, int(np.sum(got != want)))
    gray = image[:, :, 0]
    got = resize(gray, (300, 512), interpolation, backend="numpy")
    assert np.array_equal(got, resize(gray, (300, 512), interpolation, backend="pillow"))


def test_bad_inputs():
    with pytest.raises(ValueError, match="uint8"):
        preprocess(np.zeros((8, 8, 3), np.float32), CFG)
    with pytest.raises(ValueError, match="channels"):
        preprocess(np.zeros((8, 8, 4), np.uint8), CFG)
    with pytest.raises(ValueError, match="interpolation 'cubic'"):
        resize(np.zeros((8, 8, 3), np.uint8), (4, 4), "cubic")
    with pytest.raises(ValueError, match="backend"):
        resize(np.zeros((8, 8, 3), np.uint8), (4, 4), backend="cv2")


# ---------------------------------------------------------------------------------------------
# Keras layers (close, not equal: Keras resizes in float)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_keras_preprocess_layers_close_to_numpy(photo, data_format):
    require_backend("torch")  # before TensorFlow (see conftest)
    require_backend("keras")
    from eca_multi.keras.preprocess import preprocess_layers

    image = np.asarray(photo)
    want = preprocess(image, CFG)
    prep = preprocess_layers({"pretrained_cfg": CFG}, image.shape[:2], data_format=data_format)
    x = image[None] if data_format == "channels_last" else image.transpose(2, 0, 1)[None]
    got = np.asarray(prep(x.astype(np.float32)))[0]
    got = got.transpose(2, 0, 1) if data_format == "channels_last" else got
    d = np.abs(got - want)
    assert got.shape == want.shape and d.mean() <= 0.01 and d.max() <= 0.5, (d.mean(), d.max())
    with pytest.raises(ValueError, match="hamming"):
        preprocess_layers({**CFG, "interpolation": "hamming"}, image.shape[:2])
