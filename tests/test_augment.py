"""Training augmentations: each op acts at p=1 and not at p=0, the same per-sample rng gives the same image,
`train.augment: {}` is no augmentation, and the keys the configs use keep working."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from dfpipe.config import validate
from dfpipe.data.augment import Augment

# Each op on its own, with settings that make it visible.
OPS = {
    "hflip": {},
    "rotate": {"rotate_degrees": 30.0},
    "blur": {"blur_sigma": [1.5, 2.0]},
    "jitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1},
    "jpeg": {"jpeg_quality": [40, 60]},
}


@pytest.fixture(scope="module")
def image() -> Image.Image:
    """A 64² image with texture and no symmetry, so every op leaves a trace."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, 64)[None, :, None] + np.linspace(0, 50, 64)[:, None, None]
    pixels = np.clip(ramp + rng.normal(0, 20, (64, 64, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("op", sorted(OPS))
def test_each_op_changes_the_image_at_p1_and_not_at_p0(image: Image.Image, op: str) -> None:
    on = Augment.from_dict({op: 1.0, **OPS[op]})
    off = Augment.from_dict({op: 0.0, **OPS[op]})
    for k in range(4):
        assert np.abs(pixels(on(image, random.Random(k))) - pixels(image)).mean() > 0.5, f"{op} at p=1, sample {k}"
        assert (pixels(off(image, random.Random(k))) == pixels(image)).all(), f"{op} at p=0, sample {k}"


def test_probability_is_respected(image: Image.Image) -> None:
    aug = Augment(hflip=0.3)
    flipped = sum((pixels(aug(image, random.Random(k))) != pixels(image)).any() for k in range(400))
    assert 90 <= flipped <= 150  # 120 expected


def test_same_rng_same_image_whatever_happened_before(image: Image.Image) -> None:
    aug = Augment.from_dict(
        {"hflip": 0.5, "rotate": 0.5, "blur": 0.5, "jitter": 0.5, "jpeg": 0.5, "jpeg_quality": [60, 100]}
    )
    first = [pixels(aug(image, random.Random(f"7/0/{k}"))) for k in range(12)]
    torch.manual_seed(123)  # the global generator's state must not leak into a sample's augmentation
    again = [pixels(aug(image, random.Random(f"7/0/{k}"))) for k in range(12)]
    assert all((a == b).all() for a, b in zip(first, again, strict=True))
    assert len({a.tobytes() for a in first}) > 6, "different samples should mostly be augmented differently"
    # ... nor does augmenting move the global generator (the trainer's draws stay as they were).
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    aug(image, random.Random(1))
    assert torch.equal(torch.rand(3), expected)


def test_empty_section_is_no_augmentation(image: Image.Image) -> None:
    for aug in (Augment.from_dict({}), Augment.from_dict(None), Augment()):
        assert aug.transform() is None
        assert all((pixels(aug(image, random.Random(k))) == pixels(image)).all() for k in range(20))


def test_config_keys_keep_working_and_bad_ones_are_named() -> None:
    # The keys config.yaml's comment, the paper config and the train tests use.
    aug = Augment.from_dict({"hflip": 0.5, "blur": 0.1, "jitter": 0.1, "jpeg": 0.5, "jpeg_quality": [40, 100]})
    assert (aug.hflip, aug.jpeg, aug.jpeg_quality) == (0.5, 0.5, (40, 100))
    with pytest.raises(ValueError, match=r"train\.augment: unknown keys \['vflip'\]"):
        Augment.from_dict({"vflip": 0.5})
    with pytest.raises(ValueError, match=r"train\.augment\.rotate = 1\.5"):
        Augment.from_dict({"rotate": 1.5})
    with pytest.raises(ValueError, match=r"train\.augment\.jpeg_quality = \[60, 40\]"):
        Augment.from_dict({"jpeg_quality": [60, 40]})


def test_schema_accepts_the_new_keys_and_refuses_unknown_ones() -> None:
    recipe = {
        "hflip": 0.5,
        "rotate": 0.5,
        "rotate_degrees": 10,
        "blur": 0.5,
        "blur_sigma": [0.1, 2.0],
        "jitter": 0.5,
        "brightness": 0.2,
        "contrast": 0.2,
        "saturation": 0.2,
        "hue": 0.05,
        "jpeg": 0.5,
        "jpeg_quality": [40, 100],
    }
    config = validate({"train": {"augment": recipe}})
    assert config["train"]["augment"] == recipe  # no defaults filled in: {} stays no augmentation
    assert Augment.from_dict(config["train"]["augment"]).rotate == 0.5
    assert validate({})["train"]["augment"] == {}
    with pytest.raises(Exception, match="vflip"):
        validate({"train": {"augment": {"vflip": 0.5}}})
