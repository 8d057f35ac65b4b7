"""Error Level Analysis: a region with another JPEG history stands out; the transform is deterministic."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from skimage import data

from dfpipe.models.ela import ELA, encoder_id, error_level

REGION = (slice(160, 288), slice(192, 320))  # 128² on the 8×8 grid, over the astronaut's face and suit


def jpeg(image: Image.Image, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.fromarray(data.astronaut())


@pytest.mark.parametrize("region_quality", [98, None])
def test_pasted_region_with_another_jpeg_history_stands_out(photo, region_quality) -> None:
    # The photo saved at quality 70, with one region pasted from a copy saved at 98 (or never compressed).
    composite = jpeg(photo, 70).copy()
    source = np.asarray(photo) if region_quality is None else jpeg(photo, region_quality)
    composite[REGION] = source[REGION]
    ela = error_level(composite, ELA(quality=90, scale=15)).astype(float).mean(axis=2)
    inside = np.zeros(ela.shape, bool)
    inside[REGION] = True
    # measured: ~27-32 inside against ~9 outside
    assert ela[inside].mean() > 2 * ela[~inside].mean()


def test_untouched_jpeg_has_no_region_standing_out(photo) -> None:
    """Control for the test above: without the paste the same region is not brighter than the rest."""
    ela = error_level(jpeg(photo, 70), ELA(quality=90, scale=15)).astype(float).mean(axis=2)
    inside = np.zeros(ela.shape, bool)
    inside[REGION] = True
    assert ela[inside].mean() < 1.5 * ela[~inside].mean()


def test_deterministic_and_the_same_for_arrays_and_pil_images(photo) -> None:
    a = error_level(photo)
    b = error_level(photo)
    c = error_level(np.asarray(photo))
    assert isinstance(a, Image.Image) and isinstance(c, np.ndarray)
    assert a.size == photo.size and c.shape == np.asarray(photo).shape and c.dtype == np.uint8
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert np.array_equal(np.asarray(a), c)


def test_scale_amplifies_and_quality_matters(photo) -> None:
    low = error_level(np.asarray(photo), ELA(quality=90, scale=1)).astype(float)
    high = error_level(np.asarray(photo), ELA(quality=90, scale=10)).astype(float)
    assert high.mean() > 5 * low.mean()
    assert not np.array_equal(error_level(np.asarray(photo), ELA(quality=50)), error_level(np.asarray(photo)))


def test_settings_are_checked_and_named() -> None:
    assert ELA.from_dict(None) is None and ELA.from_dict({}) is None
    assert ELA.from_dict({"quality": 80}) == ELA(quality=80)
    with pytest.raises(ValueError, match="ela: unknown keys \\['qualty'\\]"):
        ELA.from_dict({"qualty": 80})
    with pytest.raises(ValueError, match="ela.quality 0"):
        ELA(quality=0)
    with pytest.raises(ValueError, match="H×W×3 uint8"):
        error_level(np.zeros((4, 4), np.uint8))
    assert "libjpeg" in encoder_id()
