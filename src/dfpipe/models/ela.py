"""Error Level Analysis (ELA) as an input transform: re-save an image as JPEG at a set quality and keep the
amplified absolute difference, |image - resaved| × scale (clipped to 255), per pixel and channel.

Regions whose JPEG history differs from the rest of the image (pasted from another source, re-compressed at
another quality, synthesised without any JPEG step) change by a different amount under the same re-save, so
they stand out. The MobileNet seed (`shared/seeds/mobilenet-gradcam-readme.md`) used ELA as preprocessing;
a detector trained on ELA images sees the ELA image in training, evaluation and predict alike. In training,
ELA is computed after the augmentations (`dfpipe.data.loader`): they change the photo, and ELA reads the result.

Encoder: libjpeg (libjpeg-turbo, the one inside the pinned Pillow wheel), in-process, baseline, 4:4:4, not
MozJPEG's cjpeg. ELA measures the error of a *standard* re-save, the one ELA tools and the seed's literature
use; MozJPEG's trellis quantisation chooses coefficients to minimise rate-distortion, so its error at a
given quality number is another quantity. ELA also runs per sample inside the data loader: an in-process
encode costs ~1 ms per 256² crop, a cjpeg process per sample several times that. 4:4:4 (no chroma
subsampling) keeps the error a quantisation error: 4:2:0 would add a colour-edge blur term that depends on
content, not on JPEG history. The encoder and its settings are fixed here and named by `encoder_id()` (for
provenance), so training, evaluation and predict compute the same ELA image from the same pixels; the
result depends only on the Pillow version pinned in envs/constraints.txt.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from typing import Any, overload

import numpy as np
import PIL
from PIL import Image, features

from dfpipe.config import schema_defaults

# The FotoForensics-style default, kept in the config schema (detectors' ela): a re-save at 90 and a fixed gain,
# so the same error gives the same pixel value in every image (a per-image max normalisation would make dark and
# bright ELA images incomparable).
_DEFAULTS = schema_defaults("detectors.ela")
DEFAULT_QUALITY = int(_DEFAULTS["quality"])
DEFAULT_SCALE = float(_DEFAULTS["scale"])  # a float, as model files have always recorded it


@dataclass(frozen=True)
class ELA:
    """ELA settings: the re-save `quality` (1..100) and the `scale` that amplifies the difference."""

    quality: int = DEFAULT_QUALITY
    scale: float = DEFAULT_SCALE

    def __post_init__(self) -> None:
        if not 1 <= int(self.quality) <= 100:
            raise ValueError(f"ela.quality {self.quality} is out of range; use 1..100")
        if not float(self.scale) > 0:
            raise ValueError(f"ela.scale {self.scale} must be > 0")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | bool | None) -> ELA | None:
        """Settings from a config/model-file dict ({"quality": 90, "scale": 15}); `true` means the defaults;
        None, false or {} means no ELA."""
        if d is True:
            return cls()
        if not d:
            return None
        if not isinstance(d, dict):
            raise ValueError(f"ela: {d!r}; give true, false or a mapping like {{quality: 90, scale: 15}}")
        unknown = sorted(set(d) - {"quality", "scale"})
        if unknown:
            raise ValueError(f"ela: unknown keys {unknown}; known: quality, scale")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def encoder_id() -> str:
    """The encoder ELA re-saves with, e.g. "Pillow 13.0.0 libjpeg-turbo 3.2.0 baseline 4:4:4" (for provenance)."""
    turbo = features.version("libjpeg_turbo")
    codec = f"libjpeg-turbo {turbo}" if turbo else f"libjpeg {features.version('jpg')}"
    return f"Pillow {PIL.__version__} {codec} baseline 4:4:4"


def resave(image: Image.Image, quality: int) -> Image.Image:
    """`image` (RGB) encoded as baseline 4:4:4 JPEG at `quality` by Pillow's libjpeg and decoded again."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=int(quality), subsampling=0, optimize=False, progressive=False)
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out


@overload
def error_level(image: Image.Image, settings: ELA = ...) -> Image.Image: ...
@overload
def error_level(image: np.ndarray, settings: ELA = ...) -> np.ndarray: ...


def error_level(image: Image.Image | np.ndarray, settings: ELA = ELA()) -> Image.Image | np.ndarray:
    """The ELA image of an RGB image (PIL image or H×W×3 uint8 array; the result has the same type and size).

    Deterministic: the same pixels and settings give the same bytes."""
    as_array = isinstance(image, np.ndarray)
    if as_array:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"error_level: expected an H×W×3 uint8 RGB array, got {image.shape} {image.dtype}")
        pil = Image.fromarray(image)
    else:
        pil = image if image.mode == "RGB" else image.convert("RGB")
    pixels = np.asarray(pil, dtype=np.int16)
    again = np.asarray(resave(pil, settings.quality), dtype=np.int16)
    diff = np.abs(pixels - again).astype(np.float32) * float(settings.scale)
    out = np.clip(np.rint(diff), 0, 255).astype(np.uint8)
    return out if as_array else Image.fromarray(out)
