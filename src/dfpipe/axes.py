"""The test axes beyond MozJPEG quality: other image codecs, the platform path (the whole source video
re-encoded) and test-time perturbations. Each configured level is one *setting* with a name that is its folder
under data/compress/, data/fidelity/ and data/shards/ and its column in the result tables.

MozJPEG qualities stay the study's main axis (settings `q95`, `q77`, … on which detectors are trained).
Every setting here is a test setting: its crops come from the test split only, and the detectors trained at
the MozJPEG qualities score them, so a setting added to the config plans only its own jobs.

Kept light (no image libraries): the Snakefile reads it on every dry run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Image codecs: config name -> name prefix and the file extension their images carry in the shards.
CODECS = {"libjpeg-turbo": ("turbo", "jpg"), "webp": ("webp", "webp"), "avif": ("avif", "avif"), "jxl": ("jxl", "jxl")}
VIDEO_CODECS = {"h264": "h264"}
# Perturbations: config name -> name prefix of a level (scale factor, blur sigma, noise sigma in 8-bit units).
PERTURBATIONS = {"resize": "resize-x", "blur": "blur-s", "noise": "noise-s"}


@dataclass(frozen=True)
class Setting:
    """One test setting: `kind` codec | video | perturb, `method` the codec or perturbation, `level` its
    quality, CRF or strength."""

    name: str
    kind: str
    method: str
    level: float

    @property
    def extension(self) -> str:
        """The extension of its images in the shards: the codec's own, or png for lossless-stored crops."""
        return image_extension(self.name)


def _level(value: float) -> str:
    return f"{value:g}"


def codec_setting(codec: str, quality: int) -> Setting:
    return Setting(f"{CODECS[codec][0]}-q{int(quality)}", "codec", codec, int(quality))


def video_setting(codec: str, crf: int) -> Setting:
    return Setting(f"{VIDEO_CODECS[codec]}-crf{int(crf)}", "video", codec, int(crf))


def perturb_setting(kind: str, level: float) -> Setting:
    return Setting(f"{PERTURBATIONS[kind]}{_level(level)}", "perturb", kind, float(level))


def configured_settings(config: dict[str, Any]) -> list[Setting]:
    """Every test setting of a validated config, in config order: codecs, platform videos, perturbations."""
    compress = config["compress"]
    out = [codec_setting(c["codec"], q) for c in compress.get("codecs", []) for q in c["qualities"]]
    platform = compress.get("platform") or {}
    out += [video_setting(platform.get("codec", "h264"), crf) for crf in platform.get("crfs", [])]
    out += [perturb_setting(p["kind"], level) for p in config.get("perturb", []) for level in p["levels"]]
    names = [s.name for s in out]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"compress/perturb: settings {duplicated} are configured twice")
    return out


def image_extension(folder: str) -> str:
    """The extension of the images in a shard folder: a codec setting's own (jpg for libjpeg-turbo), png for
    the lossless-stored crops of the platform path and the perturbations, jpg for a MozJPEG quality (q95)."""
    for prefix, extension in CODECS.values():
        if folder.startswith(f"{prefix}-q"):
            return extension
    lossless = [f"{p}-crf" for p in VIDEO_CODECS.values()] + list(PERTURBATIONS.values())
    return "png" if folder.startswith(tuple(lossless)) else "jpg"


def by_name(config: dict[str, Any]) -> dict[str, Setting]:
    return {s.name: s for s in configured_settings(config)}
