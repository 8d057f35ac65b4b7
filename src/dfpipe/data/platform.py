"""The platform path: the whole source video re-encoded with H.264 at a CRF (FF++'s c23/c40 are libx264 CRF 23
and 40; sharing platforms transcode alike), then its frames read and its faces cut again.

Faces are cut with the geometry the faces stage found on the source video (same box, keypoints and
alignment), so each crop is pixel-aligned with its lossless reference and PSNR/SSIM measure the codec alone,
not a detector's jitter. Crops are kept lossless (PNG): what the detectors see is exactly the decoded video.
Bits per pixel are the re-encoded video's: its file size over every pixel of every frame.
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
from pathlib import Path

import cv2
import ffmpeg
import numpy as np

from dfpipe.data.faces import crop_transform
from dfpipe.data.frames import iter_frames

PRESET = "medium"  # libx264's default, as FF++'s ffmpeg calls used


@functools.cache
def encoder_version() -> str:
    """ffmpeg's version line, e.g. "ffmpeg version 5.1.6-0+deb12u1" (its libx264 is the one it links)."""
    proc = subprocess.run(["ffmpeg", "-hide_banner", "-version"], capture_output=True, text=True, check=False)
    line = (proc.stdout or proc.stderr).splitlines()[0] if (proc.stdout or proc.stderr) else "ffmpeg (unknown)"
    return " ".join(line.split()[:3])


def encoder_id(crf: int) -> str:
    return f"{encoder_version()} libx264 -crf {int(crf)} -preset {PRESET} -pix_fmt yuv420p -threads 1"


def reencode(source: Path, crf: int, dest: Path) -> None:
    """`source` re-encoded to `dest` (MP4, video only) by libx264 at `crf`: every frame kept (passthrough),
    one thread and bit-exact flags, so the same input gives the same bytes on any machine."""
    args = (
        ffmpeg.input(str(source))
        .output(
            str(dest),
            vcodec="libx264",
            crf=int(crf),
            preset=PRESET,
            pix_fmt="yuv420p",
            threads=1,
            an=None,
            fps_mode="passthrough",
            map_metadata=-1,
            fflags="+bitexact",
            flags="+bitexact",
        )
        .global_args("-nostdin", "-hide_banner", "-v", "error", "-y")
        .compile()
    )
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not dest.is_file():
        raise RuntimeError(f"{source}: H.264 re-encode at CRF {crf} failed: {proc.stderr.strip()[-500:]}")


def cut_video(
    source: Path, crf: int, rows: list, size: int, margin: float, align: bool
) -> tuple[dict[int, np.ndarray], float]:
    """The crops at each row's frame_index (rows: ok rows of the faces table, with box and keypoints) from
    `source` re-encoded at `crf`, and the re-encoded video's bits per pixel."""
    geometry = {
        int(r.frame_index): crop_transform(
            np.asarray(r.box, np.float64), np.asarray(r.keypoints, np.float32).reshape(-1, 2), size, margin, align
        )
        for r in rows
    }
    crops: dict[int, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        encoded = Path(tmp) / "video.mp4"
        reencode(source, crf, encoded)
        probe = ffmpeg.probe(str(encoded), count_frames=None, select_streams="v:0")["streams"][0]
        n_frames = int(probe.get("nb_read_frames") or probe.get("nb_frames") or 0)
        if n_frames == 0:
            raise RuntimeError(f"{source}: its CRF {crf} re-encode holds no frames ffprobe can count")
        pixels = int(probe["width"]) * int(probe["height"]) * n_frames
        for index, frame in iter_frames(encoded, sorted(geometry)):
            crops[index] = cv2.warpAffine(
                frame, geometry[index], (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
            )
        bpp = 8.0 * encoded.stat().st_size / pixels
    missing = sorted(set(geometry) - set(crops))
    if missing:
        raise RuntimeError(f"{source}: the CRF {crf} re-encode lacks frames {missing[:5]}")
    return crops, bpp
