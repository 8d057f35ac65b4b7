"""The GAN-face image set: an offline, deterministic real-vs-generated face dataset in the image-folder layout.

Real faces are the demo source's real identities (the faces it finds in the media shipped in registry
packages: the carphone video and the packaged photos), each seen in a few frames of its demo clip (a slow
camera move, `dfpipe.sources.demo.photo_clip` / `video_clip`). Fakes come from a real generator, the
MobileStyleGAN the demo already runs (`dfpipe.sources.demo.gan_faces`, f32 on one thread), at several
truncation settings; each setting is its own "generator" (`fake/trunc_0_6/`, ...), so probes and detectors
can be trained on one and tested on another.

Real and fake images take exactly the same path: landmarks from the same mesh, the same square crop around
them (`crop_face`), the same resize to `size`², written losslessly as PNG; the image-folder source
(`dfpipe.sources.images`) then decodes them and MozJPEG encodes them like any other crop. Nothing but the
generator separates the classes (no size, format or encoder difference a classifier could learn instead).

Identities are paired like FF++ (000+001, 002+003, ...) and split by pairs with the demo's `split_pairs`; a
real identity's frames and the fakes generated under its number share its split (`splits.json`, names
inside the class folders: `<identity>/<k>.png`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from . import assets
from .io import atomic_path, write_json
from .landmarks import Landmarker
from .sources import demo

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULTS: dict[str, Any] = {"identities": 24, "truncations": [0.6, 0.8, 1.0], "size": 256, "margin": 1.3, "seed": 0}
# Latents are drawn apart from the demo's own (seed 0 there): the demo's Deepfakes paste GAN faces of the same
# numbers, and a probe tested across the two datasets must not meet the very faces it was trained on.
GAN_SEED_OFFSET = 1000
CLIP_SIZE = 512  # real clips rendered at the GAN's 512²: both classes are downscaled alike into the crop
CLIP_FPS = 25


def generator_name(truncation: float) -> str:
    """Folder / method name of one truncation setting, e.g. 0.6 -> "trunc_0_6"."""
    return "trunc_" + f"{truncation:g}".replace(".", "_")


def crop_face(rgb: np.ndarray, points: np.ndarray, size: int, margin: float) -> np.ndarray:
    """The square of side `margin` × the landmarks' larger extent around their centre, reflected where it
    leaves the image, resized to `size`² with area averaging (the one crop of both classes)."""
    lo, hi = points.min(0), points.max(0)
    half = margin * float(max(hi - lo)) / 2
    cx, cy = (lo + hi) / 2
    x0, y0 = int(round(cx - half)), int(round(cy - half))
    side = max(1, int(round(2 * half)))
    pad = max(0, -x0, -y0, x0 + side - rgb.shape[1], y0 + side - rgb.shape[0])
    padded = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REFLECT101) if pad else rgb
    square = padded[y0 + pad : y0 + pad + side, x0 + pad : x0 + pad + side]
    interp = cv2.INTER_AREA if side >= size else cv2.INTER_CUBIC
    return cv2.resize(square, (size, size), interpolation=interp)


def _settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    settings = dict(settings or {})
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"ganfaces settings: unknown keys {sorted(unknown)}; allowed: {sorted(DEFAULTS)}")
    out = {**DEFAULTS, **settings}
    out["truncations"] = [float(t) for t in out["truncations"]]
    if out["identities"] < 2 or out["identities"] % 2:
        raise ValueError(f"ganfaces.identities = {out['identities']}: an even number >= 2 (identities are paired)")
    if (
        not out["truncations"]
        or not all(0 < t <= 1.5 for t in out["truncations"])
        or len(set(out["truncations"])) != len(out["truncations"])
    ):
        raise ValueError(f"ganfaces.truncations = {out['truncations']}: distinct values in (0, 1.5]")
    return out


def _write_png(path: Path, rgb: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes())


def _up_to_date(dest: Path, expected: dict[str, Any]) -> bool:
    try:
        record = json.loads((dest / "sources.json").read_text())
    except (OSError, ValueError):
        return False
    return all(record.get(k) == v for k, v in expected.items()) and all(
        (dest / rel).is_file() for rel in record.get("files", [])
    )


def build(dest: Path, settings: dict[str, Any] | None = None, gan_cache: Path | None = None) -> Path:
    """Build the set under `dest` (real/, fake/<generator>/, splits.json, sources.json); a no-op when up to date.
    Returns the split file to give `dfpipe.sources.images.scan`."""
    dest = Path(dest)
    cfg = _settings(settings)
    expected = {"format": FORMAT_VERSION, "settings": cfg}
    if _up_to_date(dest, expected):
        logger.info(f"ganfaces: {dest} is up to date")
        return dest / "splits.json"
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # deterministic resampling, as the demo build
    try:
        _build(dest, cfg, expected, gan_cache)
    finally:
        cv2.setNumThreads(threads)
    return dest / "splits.json"


def _build(dest: Path, cfg: dict[str, Any], expected: dict[str, Any], gan_cache: Path | None) -> None:
    n_ids, truncs, size, margin, seed = (cfg[k] for k in ("identities", "truncations", "size", "margin", "seed"))
    per_real = len(truncs)  # as many real images per identity as fakes: balanced classes
    media = {m.name: m for m in assets.demo_media()}
    candidates = demo.find_candidates(media)
    if len(candidates) < n_ids:
        raise ValueError(
            f"ganfaces.identities = {n_ids}, but the bundled media hold only {len(candidates)} usable "
            "real faces; lower ganfaces.identities"
        )
    idents = [f"{i:03d}" for i in range(n_ids)]
    files: list[str] = []
    n_frames = CLIP_FPS  # one second of clip; real images are spread evenly over it
    picks = np.linspace(0, n_frames - 1, per_real).round().astype(int)
    cache = gan_cache if gan_cache is not None else assets.tools_dir() / "cache" / "demo-gan"
    with Landmarker() as lm:
        for ident, cand in zip(idents, candidates):
            if cand.media == demo.VIDEO:
                clip = demo.video_clip(ident, media[demo.VIDEO].path, lm, n_frames, CLIP_FPS, CLIP_SIZE)
            else:
                rng = np.random.default_rng([seed, int(ident), 7])
                clip = demo.photo_clip(
                    ident, demo._read_rgb(media[cand.media].path), cand.box, lm, n_frames, CLIP_FPS, CLIP_SIZE, rng
                )
            for k, t in enumerate(picks):
                rel = f"real/{ident}/{k}.png"
                _write_png(dest / rel, crop_face(clip.frame(int(t)), clip.points[int(t)], size, margin))
                files.append(rel)
        for trunc in truncs:
            faces = demo.gan_faces(idents, GAN_SEED_OFFSET + seed, lm, cache, truncation=trunc)
            for ident, (rgb, points) in faces.items():
                rel = f"fake/{generator_name(trunc)}/{ident}/0.png"
                _write_png(dest / rel, crop_face(rgb, points, size, margin))
                files.append(rel)
            logger.info(f"ganfaces: {len(faces)} faces at truncation {trunc:g}")

    pairs = [[idents[i], idents[i + 1]] for i in range(0, n_ids, 2)]
    by_split = demo.split_pairs(pairs, seed)
    names = {
        split: sorted(f"{ident}/{k}.png" for pair in ps for ident in pair for k in range(per_real))
        for split, ps in by_split.items()
    }
    write_json(dest / "splits.json", names)
    write_json(
        dest / "sources.json",
        {
            **expected,
            "identities": {i: {"input": c.media, "face_box": list(c.box)} for i, c in zip(idents, candidates)},
            "pairs": by_split,
            "generators": {
                generator_name(t): {
                    "generator": "MobileStyleGAN (random-face package, OpenVINO IR)",
                    "truncation": t,
                    "latents": f"first detectable draw of default_rng("
                    f"[{GAN_SEED_OFFSET + seed}, identity, k]), k = 0, 1, …",
                }
                for t in truncs
            },
            "inputs": [{"name": m.name, "origin": m.origin, "licence": m.licence} for m in media.values()]
            + [
                {
                    "name": "random-face/MobileStyleGAN",
                    "origin": demo.GAN_ORIGIN.split(",")[0],
                    "licence": demo.GAN_LICENCE,
                }
            ],
            "files": sorted([*files, "splits.json"]),
        },
    )
    logger.info(f"ganfaces: {len(files)} images ({n_ids * per_real} real, {n_ids * len(truncs)} fake) under {dest}")


def generators(settings: dict[str, Any] | None = None) -> Sequence[str]:
    """The fake method names a build with `settings` holds."""
    return [generator_name(t) for t in _settings(settings)["truncations"]]
