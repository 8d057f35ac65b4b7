"""Image codecs beside MozJPEG, each at its own quality scale: libjpeg-turbo's baseline JPEG (Pillow's: the
encoder most software uses), WebP and AVIF (Pillow) and JPEG XL (imagecodecs' libjxl).

Each encoder runs with its library's defaults but for the quality, as an application would call it, and
`encoder_id` records library version and the arguments with every crop. `decode` reads any of them back.
"""

from __future__ import annotations

import functools
import io

import imagecodecs
import numpy as np
from PIL import Image, features

# Pillow's save() arguments per codec beyond the format and quality: none, so each is its library's default
# (libjpeg-turbo: 4:2:0, standard tables, baseline; WebP: method 4; AVIF: speed 6, 4:2:0).
# codec -> (Pillow format, Pillow feature, the library it names)
PILLOW_CODECS = {
    "libjpeg-turbo": ("JPEG", "libjpeg_turbo", "libjpeg-turbo"),
    "webp": ("WEBP", "webp", "libwebp"),
    "avif": ("AVIF", "avif", "libavif"),
}
JXL_SIGNATURES = (b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")


@functools.cache
def library_version(codec: str) -> str:
    """The encoding library and its version, e.g. "libwebp 1.6.0"."""
    if codec == "jxl":
        return str(imagecodecs.jpegxl_version())  # "libjxl 0.11.2"
    _, feature, library = PILLOW_CODECS[codec]
    if not features.check(feature):
        raise RuntimeError(f"this Pillow cannot encode {codec} (PIL.features.check({feature!r}) is False)")
    return f"{library} {features.version(feature)}"


def encoder_id(codec: str, quality: int) -> str:
    """Provenance of one setting's files: library, version and arguments."""
    via = "imagecodecs.jpegxl_encode level" if codec == "jxl" else f"Pillow {Image.__version__} quality"
    return f"{library_version(codec)} ({via}={int(quality)})"


def encode(rgb: np.ndarray, codec: str, quality: int) -> bytes:
    """`rgb` (H×W×3 uint8) encoded by `codec` at `quality` (each codec's own 0–100 scale)."""
    if codec == "jxl":
        return bytes(imagecodecs.jpegxl_encode(np.ascontiguousarray(rgb), level=int(quality)))
    out = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(out, format=PILLOW_CODECS[codec][0], quality=int(quality))
    return out.getvalue()


def pillow_cannot_read(data: bytes) -> bool:
    """Whether `data` is in a format Pillow does not read (JPEG XL): `decode` reads it."""
    return data.startswith(JXL_SIGNATURES)


def decode(data: bytes, name: str = "image") -> np.ndarray:
    """RGB uint8 array of an image in any of these formats (or PNG, JPEG); the error names the image."""
    try:
        if pillow_cannot_read(data):
            return np.asarray(imagecodecs.jpegxl_decode(data))[..., :3]
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name}: not a readable image ({exc})") from exc
