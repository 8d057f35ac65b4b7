"""Training augmentations as the field's detectors use them, each applied with its own probability.

The recipes this follows (probabilities and ranges are settings; all default to off, so `train.augment: {}`
trains on the shards' pixels as they are):

- DeepfakeBench (Yan et al. 2023): horizontal flip 0.5, rotation ±10° 0.5, Gaussian blur 0.5, brightness /
  contrast 0.5, hue / saturation 0.5, JPEG re-compression at quality 40–100 with 0.5.
- The DFDC winner (Seferbekov): flip, JPEG quality 60–100, Gaussian blur, brightness/contrast, rotation.
- The EfficientNet/MozJPEG study states no augmentation of its own beyond its augmented frame rate; it builds on
  DeepfakeBench, whose recipe `configs/ffpp-paper.yaml` uses for its detectors.

Order: JPEG, flip, then rotation, blur and colour jitter. The field applies JPEG last; here it comes first
because the shards already hold MozJPEG crops at the training quality and the loader asks for it first
(`recompress` before `transform`); with rotation, blur and jitter off (the demo's flips) the order does not
matter, with them on (`configs/ffpp-paper.yaml`) it is a departure from DeepfakeBench, said there.

Every augmentation acts on the photo, never on a detector's input transform: for a detector trained on ELA
(`dfpipe.models.ela`) the loader augments the decoded crop and computes ELA of the result, so blur, colour jitter and
JPEG re-compression change the picture whose error levels the detector sees, as a blurred or re-saved face would
in the wild, instead of blurring or re-compressing the error map itself.

Every random draw comes from the per-sample `random.Random` the loader passes (seeded by seed, epoch and the
sample's place in the epoch), so a sample's augmentation is the same in any worker and after a resume. The
`transform` stages are torchvision v2 transforms drawing from torch's generator: the loader (and `__call__`)
seeds it from that same `rng` inside `torch.random.fork_rng`.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, fields
from typing import Any

import torch
from PIL import Image
from torchvision.transforms import v2

PROBABILITIES = ("hflip", "rotate", "blur", "jitter", "jpeg")


@dataclass(frozen=True)
class Augment:
    """Training augmentations; each is applied to a sample with its probability (0, the default, turns it off).

    Keys of `train.augment` (all optional): the probabilities `hflip`, `rotate`, `blur`, `jitter`, `jpeg`;
    `rotate_degrees` (largest angle either way), `blur_sigma` [lo, hi], `brightness`, `contrast`, `saturation`
    (largest relative change), `hue` (largest shift, at most 0.5), `jpeg_quality` [lo, hi] inclusive
    (DeepfakeBench [40, 100], DFDC winner [60, 100]).
    """

    hflip: float = 0.0
    rotate: float = 0.0
    rotate_degrees: float = 10.0
    blur: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    jitter: float = 0.0
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.05
    jpeg: float = 0.0
    jpeg_quality: tuple[int, int] = (40, 100)  # DeepfakeBench's range

    def __post_init__(self) -> None:
        for name in PROBABILITIES:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"train.augment.{name} = {getattr(self, name)}: a probability, must be in [0, 1]")
        lo, hi = self.jpeg_quality
        if not 1 <= lo <= hi <= 100:
            raise ValueError(
                f"train.augment.jpeg_quality = {list(self.jpeg_quality)}: need [lo, hi] with 1 <= lo <= hi <= 100"
            )
        lo, hi = self.blur_sigma
        if not 0 < lo <= hi:
            raise ValueError(f"train.augment.blur_sigma = {list(self.blur_sigma)}: need [lo, hi] with 0 < lo <= hi")
        if (
            self.rotate_degrees < 0
            or not 0 <= self.hue <= 0.5
            or min(self.brightness, self.contrast, self.saturation) < 0
        ):
            raise ValueError(
                "train.augment: rotate_degrees, brightness, contrast and saturation must be >= 0 and hue in [0, 0.5]"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Augment:
        """From the `train.augment` section; `{}` or None: no augmentation."""
        d = dict(d or {})
        known = sorted(f.name for f in fields(cls))
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"train.augment: unknown keys {unknown}; known: {known}")
        for k in ("blur_sigma", "jpeg_quality"):
            if k in d:
                if len(d[k]) != 2:
                    raise ValueError(f"train.augment.{k} = {d[k]}: need two values [lo, hi]")
                d[k] = tuple(d[k])
        return cls(**d)

    @property
    def active(self) -> bool:
        """Whether any augmentation can change a sample (some probability above 0)."""
        return any(getattr(self, name) > 0 for name in PROBABILITIES)

    def transform(self) -> v2.Transform | None:
        """Rotation, blur and colour jitter as v2 stages on a PIL image (each with its probability), or None when
        all are off. They draw from torch's generator: seed it per sample (`__call__` shows how)."""
        stages: list[v2.Transform] = []
        if self.rotate > 0:
            rotation = v2.RandomRotation(self.rotate_degrees, interpolation=v2.InterpolationMode.BILINEAR)
            stages.append(v2.RandomApply([rotation], p=self.rotate))
        if self.blur > 0:
            stages.append(v2.RandomApply([v2.GaussianBlur(5, self.blur_sigma)], p=self.blur))
        if self.jitter > 0:
            jitter = v2.ColorJitter(self.brightness, self.contrast, self.saturation, self.hue)
            stages.append(v2.RandomApply([jitter], p=self.jitter))
        return v2.Compose(stages) if stages else None

    def flip(self, image: Image.Image, rng: random.Random) -> Image.Image:
        """With probability `hflip`, mirror left-right (PIL directly: v2's dispatch costs more than the flip)."""
        if self.hflip <= 0 or rng.random() >= self.hflip:
            return image
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)

    def recompress(self, image: Image.Image, rng: random.Random) -> Image.Image:
        """With probability `jpeg`, re-encode at a quality drawn uniformly from `jpeg_quality` (inclusive).

        PIL (libjpeg-turbo) rather than v2.JPEG: torchvision's image codecs are deprecated since 0.29.
        """
        if self.jpeg <= 0 or rng.random() >= self.jpeg:
            return image
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=rng.randint(*self.jpeg_quality))
        out = Image.open(buf)
        out.load()  # an RGB image in, an RGB JPEG out: no mode conversion needed
        return out

    def __call__(self, image: Image.Image, rng: random.Random, transform: v2.Transform | None = None) -> Image.Image:
        """Every augmentation of one sample, as the loader applies them: JPEG, flip, then `transform()` (pass it
        when calling often: building it per sample costs more than a small image's augmentation) with torch's
        generator seeded from `rng` and restored after."""
        image = self.flip(self.recompress(image, rng), rng)
        stages = transform if transform is not None else self.transform()
        if stages is None:
            return image
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(rng.getrandbits(63))
            return stages(image)
