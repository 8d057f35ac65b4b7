"""The jpeg stage: re-encode every usable face crop with MozJPEG's cjpeg at one quality.

Real and fake crops go through the very same call (same binary, quality and flags), so a detector cannot
tell them apart by their JPEG history ("Fake or JPEG?", Grommelt et al. 2024).
"""

from __future__ import annotations

import io
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .tools import cjpeg_version

META_COLUMNS = ["key", "method", "video_id", "split", "label", "frame_index"]
JPEG_COLUMNS = [*META_COLUMNS, "quality", "jpeg", "bytes", "encoder"]


def cjpeg_args(quality: int, flags: Sequence[str]) -> list[str]:
    """The exact cjpeg arguments used for `quality` and extra `flags` (also what provenance records)."""
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality {quality} is out of range; cjpeg accepts 1..100")
    return ["-quality", str(int(quality)), *map(str, flags)]


def encoder_id(cjpeg: Path, quality: int, flags: Sequence[str]) -> str:
    """Provenance string: encoder version and flags, e.g. "mozjpeg version 5.0.0 (build …) -quality 77"."""
    return " ".join([cjpeg_version(cjpeg), *cjpeg_args(quality, flags)])


def to_ppm(rgb: np.ndarray, name: str = "image") -> bytes:
    """Binary PPM (P6) of an H×W×3 uint8 array; the static cjpeg reads PPM but not PNG."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"{name}: expected an H×W×3 uint8 RGB array, got shape {rgb.shape} dtype {rgb.dtype}")
    h, w = rgb.shape[:2]
    return b"P6\n%d %d\n255\n" % (w, h) + np.ascontiguousarray(rgb).tobytes()


def encode(rgb: np.ndarray, quality: int, flags: Sequence[str], cjpeg: Path, name: str = "image") -> bytes:
    """JPEG bytes of `rgb` from cjpeg (PPM on stdin, JPEG on stdout: no temporary files)."""
    cmd = [str(cjpeg), *cjpeg_args(quality, flags)]
    proc = subprocess.run(cmd, input=to_ppm(rgb, name), capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout.startswith(b"\xff\xd8"):
        err = proc.stderr.decode(errors="replace").strip() or "no JPEG on stdout"
        raise RuntimeError(f"{name}: `{' '.join(cmd)}` failed (exit {proc.returncode}): {err}")
    return proc.stdout


def decode_rgb(data: bytes, name: str = "image", field: str = "crop_png") -> np.ndarray:
    """RGB uint8 array of encoded image bytes (PNG, JPEG); the error names the crop and the column."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"{name}: {field} is not a readable image ({exc})") from exc


def _crop_name(row: pd.Series) -> str:
    return f"{row['key']} frame {row['frame_index']}"


def compress_batch(faces: pd.DataFrame, quality: int, flags: Sequence[str], cjpeg: Path, threads: int) -> pd.DataFrame:
    """The jpeg table of one faces batch: every status=="ok" crop encoded at `quality` by `threads` cjpeg processes."""
    missing = [c for c in [*META_COLUMNS, "status", "crop_png"] if c not in faces.columns]
    if missing:
        raise ValueError(f"faces table lacks columns {missing}")
    ok = faces[faces["status"] == "ok"].reset_index(drop=True)
    encoder = encoder_id(cjpeg, quality, flags)  # also refuses a non-MozJPEG binary before any work

    def encode_row(i: int) -> bytes:
        row = ok.iloc[i]
        name = _crop_name(row)
        if not isinstance(row["crop_png"], (bytes, bytearray)) or not row["crop_png"]:
            raise ValueError(f"{name}: status is ok but crop_png is empty")
        return encode(decode_rgb(row["crop_png"], name), quality, flags, cjpeg, name)

    # Threads only wait on cjpeg subprocesses (PNG decoding releases the GIL), so `threads` = cores used.
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        jpegs = list(pool.map(encode_row, range(len(ok))))

    out = ok[META_COLUMNS].copy()
    out["quality"] = int(quality)
    out["jpeg"] = pd.Series(jpegs, index=out.index, dtype=object)
    out["bytes"] = out["jpeg"].map(len).astype("int64")
    out["encoder"] = encoder
    return out[JPEG_COLUMNS]
