"""The faces stage: detect, align and crop one face per planned frame, and account for every planned frame.

One row per plan row (see `frames`), with `status`:
  ok             a face was found and cropped (`crop_png` holds the lossless RGB crop)
  no_face        the detector found no face at `min_confidence`
  face_too_small the tracked face is smaller than `min_face_size` pixels in the frame
  collapsed_keypoints  the keypoints span too little of the face box (`MIN_KEYPOINT_SPREAD`): not a face
                 the detector understood, e.g. a sideways face in a video whose rotation metadata is wrong
  poor_alignment the keypoints sit too far from the face template after the best similarity transform
                 (`MAX_ALIGNMENT_RESIDUAL`): the crop would not be a face in the standard pose
  decode_error   the frame predicts from a packet the decoder reported an error for (no key frame in
                 between), so its pixels may be smeared by error concealment (see `frames.damaged_frames`)
  not_decoded    the frame never came out of the decoder (unreadable, truncated or corrupt video)
and a human `reason` for every status but ok. Nothing is dropped: a bad video cannot crash a batch.

Geometry columns are flat float lists: `box` = [x, y, w, h] in frame pixels, `keypoints` and
`crop_keypoints` = [x0, y0, ..., x5, y5] (mediapipe's order: right eye, left eye, nose tip, mouth centre,
right ear, left ear; "right" is the subject's, i.e. the image's left) in frame and crop pixels.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import cv2
import mediapipe as mp
import numpy as np
import pandas as pd
import pyarrow as pa
from mediapipe.tasks.python import BaseOptions, vision

from dfpipe.data.frames import UNREADABLE, iter_frames, video_rotation
from dfpipe.data.manifest import relative_text
from dfpipe.runlog import native_output_to

logger = logging.getLogger(__name__)

STATUSES = ("ok", "no_face", "face_too_small", "collapsed_keypoints", "poor_alignment", "decode_error", "not_decoded")
# Sanity limits on a detected face. Measured: upright carphone faces span 0.85-0.97 of the box side with their
# six keypoints and fit the template to 0.01-0.03 (RMS, in face-box units); posed faces in the demo's group
# photos (tilted, half turned) 0.59-0.97 and up to 0.093. The same carphone face turned sideways by wrong
# rotation metadata gave spreads down to 0.08 with residuals up to 0.19.
MIN_KEYPOINT_SPREAD = 0.5
MAX_ALIGNMENT_RESIDUAL = 0.15
# Canonical positions of the eyes, nose tip and mouth centre in units of the detector's (square) face box,
# origin at its top-left: the mean of mediapipe's keypoints on upright frontal faces, made left-right
# symmetric, so that aligning to it puts the box centre at the crop centre with the eyes level.
TEMPLATE = np.array([[0.27, 0.27], [0.73, 0.27], [0.50, 0.45], [0.50, 0.68]], np.float32)
# Lossless either way; level 1 with the RLE strategy was the fastest setting that still compresses: ~70 KiB and
# ~5 ms for a 256² face crop (level 0 stores 190 KiB; level 3 takes 8 ms for 75 KiB).
PNG_FLAGS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]


Face = tuple[float, np.ndarray, np.ndarray]  # score, box [x, y, w, h], keypoints 6×2 (frame pixels)


def _png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image, PNG_FLAGS)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def crop_transform(box: np.ndarray, keypoints: np.ndarray, size: int, margin: float, align: bool) -> np.ndarray:
    """2×3 matrix from frame to crop pixels: the crop side spans `margin` × the face size, and the face box
    centre lands on the crop centre. `align` fits a similarity transform from the eye/nose/mouth keypoints
    to TEMPLATE (which also levels the eyes); without it, or when the keypoints are degenerate, the crop is
    the axis-aligned square around the box."""
    if align:
        dst = size / 2 + (TEMPLATE - 0.5) * (size / margin)
        # A reprojection threshold as large as the crop makes every point an inlier, so the result is the
        # least-squares fit over all four points rather than RANSAC's pick of two.
        matrix, _ = cv2.estimateAffinePartial2D(
            keypoints[:4].astype(np.float32), dst, method=cv2.RANSAC, ransacReprojThreshold=float(size)
        )
        if matrix is not None:
            return matrix
    x, y, w, h = box
    scale = size / (margin * max(w, h))
    return np.array(
        [[scale, 0, size / 2 - scale * (x + w / 2)], [0, scale, size / 2 - scale * (y + h / 2)]], np.float64
    )


def keypoint_spread(box: np.ndarray, keypoints: np.ndarray) -> float:
    """The larger side of the keypoints' bounding box over the larger side of the face box."""
    return float(np.ptp(keypoints, axis=0).max() / max(box[2], box[3], 1e-6))


def alignment_residual(keypoints: np.ndarray) -> float:
    """RMS distance of the eye/nose/mouth keypoints from TEMPLATE after the least-squares similarity
    transform onto it, in units of the template's face box (0 for a perfect frontal face)."""
    matrix, _ = cv2.estimateAffinePartial2D(
        keypoints[:4].astype(np.float32), TEMPLATE, method=cv2.RANSAC, ransacReprojThreshold=1e3
    )
    if matrix is None:
        return float("inf")
    moved = cv2.transform(keypoints[None, :4].astype(np.float64), matrix)[0]
    return float(np.sqrt(((moved - TEMPLATE) ** 2).sum(axis=1).mean()))


def _detections(detector: vision.FaceDetector, frame: np.ndarray) -> list[Face]:
    """Every face the detector reports in an RGB frame."""
    height, width = frame.shape[:2]
    result = detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame)))
    found = []
    for det in result.detections:
        b = det.bounding_box
        box = np.array([b.origin_x, b.origin_y, b.width, b.height], np.float64)
        kps = np.array([[k.x * width, k.y * height] for k in det.keypoints], np.float64)
        found.append((float(det.categories[0].score), box, kps))
    return found


def _centre(box: np.ndarray) -> np.ndarray:
    return box[:2] + box[2:] / 2


def pick_face(found: list[Face], previous: np.ndarray | None) -> Face:
    """The face to keep: the largest in the first frame with a face, then the one nearest the previously kept
    box, so a second person entering the frame never takes over the video's identity."""
    if previous is None:
        return max(found, key=lambda f: f[1][2] * f[1][3])
    return min(found, key=lambda f: float(np.linalg.norm(_centre(f[1]) - _centre(previous))))


def _detector(model_path: Path, min_confidence: float) -> vision.FaceDetector:
    options = vision.FaceDetectorOptions(
        base_options=BaseOptions(model_asset_path=str(model_path)),
        running_mode=vision.RunningMode.IMAGE,
        min_detection_confidence=float(min_confidence),
    )
    return vision.FaceDetector.create_from_options(options)


def _masks(
    path: Path | None, indices: list[int], threads: int, errors: list[str]
) -> Generator[tuple[int, np.ndarray], None, None]:
    """Mask frames for `indices`, or nothing when there is no mask; a broken mask is recorded, not raised."""
    if path is None:
        return
    try:
        yield from iter_frames(path, indices, threads, on_error=errors.append)
    except ValueError as exc:
        errors.append(str(exc))


def _crop_video(
    video: Any,
    indices: list[int],
    dataset_root: Path,
    settings: dict,
    detector: vision.FaceDetector,
    threads: int,
) -> list[dict[str, Any]]:
    base = {
        "key": video.key,
        "method": video.method,
        "video_id": video.video_id,
        "split": video.split,
        "label": int(video.label),
    }
    rows = {i: dict(base, frame_index=i, status="not_decoded", reason=None) for i in indices}
    if indices == [UNREADABLE]:
        error = relative_text(video.error, dataset_root) if isinstance(video.error, str) and video.error else None
        rows[UNREADABLE]["reason"] = f"video unreadable: {error or 'the manifest lists no frames'}"
        return list(rows.values())
    path = dataset_root / video.path
    mask_path = dataset_root / video.mask_path if isinstance(video.mask_path, str) and video.mask_path else None
    size, margin, align = int(settings["size"]), float(settings["margin"]), bool(settings["align"])
    min_size = float(settings["min_face_size"])
    errors: list[str] = []
    damaged: dict[int, str] = {}
    mask_errors: list[str] = []
    masks = _masks(mask_path, indices, threads, mask_errors)
    previous: np.ndarray | None = None
    try:
        for index, frame in iter_frames(path, indices, threads, on_error=errors.append, on_damaged=damaged.__setitem__):
            row = rows[index]
            mask = next((m for i, m in masks if i == index), None)
            found = _detections(detector, frame)
            if not found:
                row.update(status="no_face", reason=f"no face detected with confidence >= {settings['min_confidence']}")
                continue
            score, box, kps = pick_face(found, previous)
            previous = box
            row.update(score=score, box=box.tolist(), keypoints=kps.ravel().tolist())
            if max(box[2], box[3]) < min_size:
                row.update(
                    status="face_too_small",
                    reason=f"face is {max(box[2], box[3]):.0f} px, below min_face_size {min_size:g}",
                )
                continue
            spread = keypoint_spread(box, kps)
            if spread < MIN_KEYPOINT_SPREAD:
                row.update(
                    status="collapsed_keypoints",
                    reason=f"keypoints span {spread:.2f} of the face box, below {MIN_KEYPOINT_SPREAD:g}",
                )
                continue
            residual = alignment_residual(kps)
            if residual > MAX_ALIGNMENT_RESIDUAL:
                row.update(
                    status="poor_alignment",
                    reason=f"keypoints {residual:.3f} face-box units (RMS) from "
                    f"the template, above {MAX_ALIGNMENT_RESIDUAL:g}",
                )
                continue
            matrix = crop_transform(box, kps, size, margin, align)
            crop = cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            crop_kps = cv2.transform(kps[None].astype(np.float64), matrix)[0]
            row.update(
                status="ok",
                crop_keypoints=crop_kps.ravel().tolist(),
                crop_png=_png(cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)),
            )
            if mask is not None:
                grey = cv2.cvtColor(mask, cv2.COLOR_RGB2GRAY)
                if grey.shape != frame.shape[:2]:
                    grey = cv2.resize(grey, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_NEAREST)
                row["mask_png"] = _png(cv2.warpAffine(grey, matrix, (size, size), flags=cv2.INTER_LINEAR))
    except ValueError as exc:  # not a video at all
        errors.append(str(exc))
    finally:
        masks.close()
    # Reasons are stored: name files relative to the dataset root, never by absolute path.
    for index, message in damaged.items():
        rows[index].update(
            status="decode_error",
            reason=relative_text(message, dataset_root),
            crop_png=None,
            crop_keypoints=None,
            mask_png=None,
        )
    if damaged:
        logger.info(
            f"{video.key}: {len(damaged)} of {len(indices)} planned frames decoded after a decoder error: "
            f"{relative_text(next(iter(damaged.values())), dataset_root)}"
        )
    bad_shape = [r for r in rows.values() if r["status"] in ("collapsed_keypoints", "poor_alignment")]
    if bad_shape:
        turn = video_rotation(path)
        if turn:  # upright pixels with a stray rotation tag are the usual cause: say so
            for row in bad_shape:
                row["reason"] += (
                    f"; the video carries {turn:g}° rotation metadata, which is wrong if its pixels are upright"
                )
        logger.info(
            f"{video.key}: {len(bad_shape)} of {len(indices)} planned frames have implausible face keypoints"
            + (f" (rotation metadata {turn:g}°)" if turn else "")
        )
    missing = [r for r in rows.values() if r["status"] == "not_decoded"]
    detail = relative_text(errors[-1], dataset_root) if errors else f"{video.path}: the decoder ended early"
    for row in missing:
        row["reason"] = f"frame {row['frame_index']} not decoded: {detail}"
    if missing:
        logger.info(f"{video.key}: {len(missing)} of {len(indices)} planned frames not decoded: {detail}")
    if mask_errors:
        logger.info(f"{video.key}: mask {video.mask_path}: {relative_text(mask_errors[-1], dataset_root)}")
    return list(rows.values())


def _table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(
        rows, columns=["key", "method", "video_id", "split", "label", "frame_index", "status", "reason", "score"]
    )
    df = df.astype(
        {
            "key": "string",
            "method": "string",
            "video_id": "string",
            "split": "string",
            "label": "int8",
            "frame_index": "int64",
            "status": "string",
            "reason": "string",
            "score": "float64",
        }
    )
    # Geometry stays plain lists (object): pandas 3.1 cannot read back an Arrow list dtype from parquet.
    for name in ("box", "keypoints", "crop_keypoints"):
        df[name] = pd.Series([row.get(name) for row in rows], dtype=object)
    # PNGs as Arrow binary, so a batch with no crop at all still writes a binary (not null) column.
    for name in ("crop_png", "mask_png"):
        df[name] = pd.array([row.get(name) for row in rows], dtype=pd.ArrowDtype(pa.binary()))
    return df


def crop_batch(
    plan: pd.DataFrame,
    videos: pd.DataFrame,
    dataset_root: Path,
    settings: dict,
    model_path: Path,
    threads: int = 1,
) -> pd.DataFrame:
    """The faces table of a batch: one row per plan row, in plan order. Each video is decoded in one
    streaming pass (its mask, if any, in a second pass alongside); `threads` videos are worked on at once."""
    by_key = {row.key: row for row in videos.itertuples(index=False)}
    unknown = set(plan["key"]) - set(by_key)
    if unknown:
        raise ValueError(f"plan lists videos missing from the manifest rows given: {sorted(unknown)[:5]}")
    grouped = [(by_key[key], [int(i) for i in g["frame_index"]]) for key, g in plan.groupby("key", sort=False)]
    threads = max(1, int(threads))
    workers = min(threads, len(grouped)) or 1
    # Split the cores between videos in flight and each one's decoder.
    decode_threads = max(1, threads // workers)
    # The detectors' native INFO lines (at creation, first inference and release) go to the job's log.
    with native_output_to(logger.info), ExitStack() as stack, ThreadPoolExecutor(workers) as pool:
        # One detector per worker, reused from video to video (creating one costs ~50 ms).
        idle: queue.SimpleQueue[vision.FaceDetector] = queue.SimpleQueue()
        for _ in range(workers):
            idle.put(stack.enter_context(_detector(model_path, settings["min_confidence"])))

        def crop_video(item: tuple[Any, list[int]]) -> list[dict[str, Any]]:
            detector = idle.get()
            try:
                return _crop_video(item[0], item[1], Path(dataset_root), settings, detector, decode_threads)
            finally:
                idle.put(detector)

        parts = list(pool.map(crop_video, grouped))
    return _table([row for part in parts for row in part])


def summarize(faces: pd.DataFrame, min_faces: int) -> pd.DataFrame:
    """Per video: `planned` frames (an unreadable video's placeholder row does not count), `ok`, a count per
    other status, and `too_few` when fewer than `min_faces` frames have a usable face."""
    counts = pd.crosstab(faces["key"], faces["status"]).reindex(columns=list(STATUSES), fill_value=0)
    counts["planned"] = (faces["frame_index"] >= 0).groupby(faces["key"]).sum().reindex(counts.index)
    counts = counts.astype("int64").rename_axis(index="key", columns=None).reset_index()
    counts["too_few"] = counts["ok"] < int(min_faces)
    return counts[["key", "planned", *STATUSES, "too_few"]]
