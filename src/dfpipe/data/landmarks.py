"""Face landmarks: mediapipe's 468-point face mesh, and face finding in large group photos.

The mesh network (`face_landmark.tflite` from the mediapipe 0.10.21 wheel) is run directly with OpenVINO on a
rotated face crop placed by the Tasks FaceDetector, as mediapipe's own face-mesh graph did. The Tasks
FaceLandmarker cannot be used with this network: bundled as a `.task` it runs but returns misplaced points
(the task expects the newer 256² 478-point network). Points are float32 arrays of shape (468, 2) in pixel
coordinates of the image given; indices follow mediapipe's face-mesh topology.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import mediapipe as mp
import numpy as np
import openvino as ov
from mediapipe.tasks.python import BaseOptions, vision
from mediapipe.tasks.python.vision import FaceLandmarksConnections as C

from dfpipe.assets import face_detector_model, face_landmark_model

N_POINTS = 468
_MESH_INPUT = 192
_ROI_SCALE = 1.5  # crop side / face size, as mediapipe's face-mesh graph uses


def _loop(connections: Iterable) -> np.ndarray:
    """Point indices of a closed mediapipe contour, in drawing order (connections come as start→end edges)."""
    edges = {c.start: c.end for c in connections}
    start = min(edges)
    order = [start]
    while edges[order[-1]] != start and len(order) <= len(edges):
        order.append(edges[order[-1]])
    return np.array(order, dtype=np.int32)


def _loop_with(connections: Iterable, point: int) -> np.ndarray:
    """Point indices of the closed loop (of those an edge set forms) that contains `point`."""
    edges = [(c.start, c.end) for c in connections]
    groups: list[set[int]] = []
    for a, b in edges:
        touching = [g for g in groups if a in g or b in g]
        merged = {a, b}.union(*touching)
        groups = [g for g in groups if g not in touching] + [merged]
    return np.array(sorted(next(g for g in groups if point in g)), dtype=np.int32)


def _points(connections: Iterable) -> np.ndarray:
    return np.array(sorted({p for c in connections for p in (c.start, c.end)}), dtype=np.int32)


def _regions() -> dict[str, np.ndarray]:
    return {
        "oval": _loop(C.FACE_LANDMARKS_FACE_OVAL),
        "lips": _points(C.FACE_LANDMARKS_LIPS),
        "mouth_opening": _loop_with(C.FACE_LANDMARKS_LIPS, 13),  # 13: centre of the upper lip's inner edge
        "left_eye": _points(C.FACE_LANDMARKS_LEFT_EYE),
        "right_eye": _points(C.FACE_LANDMARKS_RIGHT_EYE),
        "left_brow": _points(C.FACE_LANDMARKS_LEFT_EYEBROW),
        "right_brow": _points(C.FACE_LANDMARKS_RIGHT_EYEBROW),
    }


REGIONS: dict[str, np.ndarray] = _regions()


class Landmarker:
    """Face detector + mesh network; use as a context manager (`with Landmarker() as lm:`). Deterministic on CPU."""

    def __init__(self, min_confidence: float = 0.5) -> None:
        opts = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(face_detector_model())),
            min_detection_confidence=min_confidence,
        )
        self._detector = vision.FaceDetector.create_from_options(opts)
        core = ov.Core()
        # f32 on purpose: the CPU plugin's default low-precision hint rounds landmarks to half pixels.
        self._mesh = core.compile_model(
            core.read_model(str(face_landmark_model())),
            "CPU",
            {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1},
        )
        self.min_confidence = min_confidence

    def __enter__(self) -> Landmarker:
        return self

    def __exit__(self, *exc: object) -> None:
        self._detector.close()

    def _detections(self, rgb: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """(centre, eye vector, size) seeds of every detected face, largest first."""
        h, w = rgb.shape[:2]
        result = self._detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb)))
        seeds = []
        for d in result.detections:
            b = d.bounding_box
            kp = np.array([(k.x * w, k.y * h) for k in d.keypoints], dtype=np.float64)
            seeds.append(
                (
                    np.array([b.origin_x + b.width / 2, b.origin_y + b.height / 2]),
                    kp[1] - kp[0],
                    float(max(b.width, b.height)),
                )
            )
        return sorted(seeds, key=lambda s: -s[2])

    def _mesh_at(self, rgb: np.ndarray, centre: np.ndarray, eyes: np.ndarray, size: float) -> np.ndarray | None:
        """Run the mesh network on the crop around `centre`, rotated so that the eye line is horizontal."""
        angle = np.degrees(np.arctan2(eyes[1], eyes[0]))
        scale = _MESH_INPUT / (_ROI_SCALE * size)
        m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), float(angle), scale)
        m[:, 2] += _MESH_INPUT / 2 - centre
        crop = cv2.warpAffine(
            rgb, m, (_MESH_INPUT, _MESH_INPUT), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )
        out = self._mesh(crop[None].astype(np.float32) / 255.0)
        coords, presence = (out[o] for o in self._mesh.outputs)
        if 1.0 / (1.0 + np.exp(-float(presence.ravel()[0]))) < self.min_confidence:
            return None
        pts = coords.reshape(-1, 3)[:, :2].astype(np.float64)
        back = cv2.invertAffineTransform(m)
        return (pts @ back[:, :2].T + back[:, 2]).astype(np.float32)

    def refine(self, rgb: np.ndarray, points: np.ndarray) -> np.ndarray | None:
        """Re-run the mesh on the crop that `points` (e.g. the previous frame's) define."""
        eyes = points[263] - points[33]  # outer eye corners: the image's left→right eye vector
        return self._mesh_at(rgb, (points.min(0) + points.max(0)) / 2, eyes.astype(np.float64), face_size(points))

    def detect_all(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Landmarks of every face found in an RGB uint8 image, largest first."""
        faces = []
        for centre, eyes, size in self._detections(rgb):
            pts = self._mesh_at(rgb, centre, eyes, size)
            # A second pass on the crop the first mesh defines places the face as the network was trained.
            pts = self.refine(rgb, pts) if pts is not None else None
            if pts is not None:
                faces.append(pts)
        return faces

    def detect(self, rgb: np.ndarray) -> np.ndarray | None:
        """Landmarks of the largest face, or None when no face is found."""
        faces = self.detect_all(rgb)
        return faces[0] if faces else None

    def detect_in_box(
        self, rgb: np.ndarray, box: tuple[float, float, float, float], work: int = 384
    ) -> np.ndarray | None:
        """Landmarks of the face inside `box` (x, y, w, h) of a large image, found on an enlarged crop of it.

        The bundled detector is the short-range one (faces filling much of a 128² input), so small faces of a
        group photo are only found once cropped around."""
        x, y, bw, bh = box
        side = 2.2 * max(bw, bh)
        cx, cy = x + bw / 2, y + bh / 2
        scale = work / side
        m = np.array([[scale, 0, work / 2 - scale * cx], [0, scale, work / 2 - scale * cy]], dtype=np.float64)
        crop = cv2.warpAffine(rgb, m, (work, work), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
        pts = self.detect(crop)
        if pts is None:
            return None
        # The crop may hold a neighbour's face too: keep the one centred where the box was.
        if np.linalg.norm(pts.mean(0) - work / 2) > 0.25 * work:
            return None
        return ((pts - m[:, 2]) / scale).astype(np.float32)


def face_size(points: np.ndarray) -> float:
    """Side of the landmarks' bounding square, in pixels."""
    span = points.max(0) - points.min(0)
    return float(max(span))


def face_box(points: np.ndarray) -> tuple[float, float, float, float]:
    x0, y0 = points.min(0)
    x1, y1 = points.max(0)
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def find_faces(
    rgb: np.ndarray, model: Path | None = None, min_size: int = 80, min_confidence: float = 0.6
) -> list[tuple[float, float, float, float]]:
    """Boxes (x, y, w, h) of the faces of an image of any size, biggest first, by detecting on overlapping tiles
    at several scales (the short-range detector misses faces that are small relative to its input)."""
    h, w = rgb.shape[:2]
    boxes: list[list[float]] = []
    scores: list[float] = []
    opts = vision.FaceDetectorOptions(
        base_options=BaseOptions(model_asset_path=str(model or face_detector_model())),
        min_detection_confidence=min_confidence,
    )
    with vision.FaceDetector.create_from_options(opts) as det:
        # The whole image, then tiles small enough that a face of `min_size` fills a useful part of one.
        tiles = {max(h, w)} | {t for t in (800, 500, 320) if 2 * min_size <= t < max(h, w)}
        for tile in sorted(tiles, reverse=True):
            step = tile // 2
            for y in range(0, max(h - tile, 0) + step, step):
                for x in range(0, max(w - tile, 0) + step, step):
                    part = np.ascontiguousarray(rgb[y : y + tile, x : x + tile])
                    for d in det.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=part)).detections:
                        b = d.bounding_box
                        if min(b.width, b.height) >= min_size:
                            boxes.append([x + b.origin_x, y + b.origin_y, b.width, b.height])
                            scores.append(d.categories[0].score)
    if not boxes:
        return []
    keep = cv2.dnn.NMSBoxes([[int(v) for v in b] for b in boxes], scores, min_confidence, 0.3)
    kept = [tuple(float(v) for v in boxes[i]) for i in np.array(keep).reshape(-1)]
    return sorted(kept, key=lambda b: -b[2] * b[3])


def smooth_track(points: list[np.ndarray | None], radius: int = 1) -> np.ndarray:
    """Fill frames with no landmarks from their nearest neighbours and average over ±radius frames, so warps
    driven by per-frame landmarks do not flicker. Raises if no frame has landmarks."""
    known = [i for i, p in enumerate(points) if p is not None]
    if not known:
        raise ValueError("no frame of the clip has a detectable face")
    filled = np.stack([points[min(known, key=lambda k: abs(k - i))] for i in range(len(points))])
    padded = np.concatenate([filled[:1].repeat(radius, 0), filled, filled[-1:].repeat(radius, 0)])
    kernel = 2 * radius + 1
    return np.stack([padded[i : i + kernel].mean(0) for i in range(len(points))]).astype(np.float32)
