"""The crops of one test setting (`dfpipe.axes`): the test split's usable crops through another codec, the
re-encoded source video, or a perturbation. One table per method (the test split is small):

  key, method, video_id, split, label, frame_index  as in the faces table
  setting   the setting's name
  image     what the detectors read: the codec's file, or a lossless PNG (platform path, perturbations)
  bytes     length of `image`
  bpp       bits per pixel of what was transmitted: the codec file over the crop's pixels, the re-encoded video
            over all its frames' pixels; NaN for perturbations (a PNG's size says nothing about them)
  encoder   library, version and arguments (provenance)
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from dfpipe.axes import Setting
from dfpipe.data import codecs, perturb, platform
from dfpipe.data.compress import META_COLUMNS, decode_rgb

SETTING_COLUMNS = [*META_COLUMNS, "setting", "image", "bytes", "bpp", "encoder"]
PERTURB_ENCODER = "dfpipe.data.perturb (OpenCV {cv2}): {kind} {level:g}, stored as PNG"


def png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


FACE_COLUMNS = [*META_COLUMNS, "status", "crop_png", "box", "keypoints"]


def read_test_faces(path: str | Path) -> pd.DataFrame:
    """The test split's rows of a faces table, with the columns the test settings use (the other splits'
    crops are filtered out as the file is read, so they never all sit in memory)."""
    return pd.read_parquet(path, columns=FACE_COLUMNS, filters=[("split", "==", "test")])


def usable_test_crops(faces: pd.DataFrame) -> pd.DataFrame:
    """The usable crops of the test split: every test setting starts from these."""
    missing = [c for c in [*META_COLUMNS, "status", "crop_png"] if c not in faces.columns]
    if missing:
        raise ValueError(f"faces table lacks columns {missing}")
    return faces[(faces["status"] == "ok") & (faces["split"] == "test")].reset_index(drop=True)


def _names(ok: pd.DataFrame) -> list[str]:
    return [f"{k} frame {f}" for k, f in zip(ok["key"], ok["frame_index"])]


def _codec_images(ok: pd.DataFrame, setting: Setting, threads: int) -> tuple[list[bytes], list[float], str]:
    def one(png_bytes: bytes, name: str) -> tuple[bytes, float]:
        rgb = decode_rgb(png_bytes, name)
        data = codecs.encode(rgb, setting.method, int(setting.level))
        return data, 8.0 * len(data) / (rgb.shape[0] * rgb.shape[1])

    with ThreadPoolExecutor(max(1, threads)) as pool:  # the encoders release the GIL
        done = list(pool.map(one, ok["crop_png"].tolist(), _names(ok)))
    return [d for d, _ in done], [b for _, b in done], codecs.encoder_id(setting.method, int(setting.level))


def _perturbed_images(ok: pd.DataFrame, setting: Setting) -> tuple[list[bytes], list[float], str]:
    images = [
        png(perturb.apply(decode_rgb(p, name), setting.method, setting.level, name))
        for p, name in zip(ok["crop_png"], _names(ok))
    ]
    encoder = PERTURB_ENCODER.format(cv2=cv2.__version__, kind=setting.method, level=setting.level)
    return images, [float("nan")] * len(images), encoder


def _platform_images(
    ok: pd.DataFrame, setting: Setting, videos: pd.DataFrame, dataset_root: Path, faces: dict, threads: int
) -> tuple[list[bytes], list[float], str]:
    paths = dict(zip(videos["key"], videos["path"]))
    groups = list(ok.groupby("key", sort=False))

    def one(item):
        key, rows = item
        if key not in paths:
            raise ValueError(f"video {key} has crops but no manifest row")
        crops, bpp = platform.cut_video(
            Path(dataset_root) / paths[key],
            int(setting.level),
            list(rows.itertuples(index=False)),
            int(faces["size"]),
            float(faces["margin"]),
            bool(faces["align"]),
        )
        return {(key, i): (png(c), bpp) for i, c in crops.items()}

    cut: dict = {}
    with ThreadPoolExecutor(max(1, threads)) as pool:  # ffmpeg runs outside the GIL, one thread per video
        for part in pool.map(one, groups):
            cut.update(part)
    pairs = [cut[(k, int(f))] for k, f in zip(ok["key"], ok["frame_index"])]
    return [p for p, _ in pairs], [b for _, b in pairs], platform.encoder_id(int(setting.level))


def setting_batch(
    faces: pd.DataFrame,
    setting: Setting,
    threads: int = 1,
    videos: pd.DataFrame | None = None,
    dataset_root: Path | None = None,
    face_settings: dict | None = None,
) -> pd.DataFrame:
    """The setting's table (module docstring) of the usable test crops in `faces` (one method's test rows, read
    from all its faces batches). The platform path also needs those videos' manifest rows `videos`, the
    `dataset_root` their paths are relative to, and the faces config."""
    ok = usable_test_crops(faces)
    if setting.kind == "codec":
        images, bpp, encoder = _codec_images(ok, setting, threads)
    elif setting.kind == "perturb":
        images, bpp, encoder = _perturbed_images(ok, setting)
    elif setting.kind == "video":
        if videos is None or dataset_root is None or face_settings is None:
            raise ValueError(f"{setting.name}: the platform path needs the manifest rows, dataset root and faces config")
        images, bpp, encoder = _platform_images(ok, setting, videos, dataset_root, face_settings, threads)
    else:
        raise ValueError(f"{setting.name}: unknown kind {setting.kind!r}")
    out = ok[META_COLUMNS].copy()
    out["setting"] = setting.name
    out["image"] = pd.Series(images, index=out.index, dtype=object)
    out["bytes"] = out["image"].map(len).astype("int64")
    out["bpp"] = pd.Series(bpp, index=out.index, dtype="float64")
    out["encoder"] = encoder
    return out[SETTING_COLUMNS]
