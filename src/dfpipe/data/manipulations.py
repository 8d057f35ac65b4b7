"""Classical face manipulations on one frame at a time, driven by 478-point face landmarks.

Each method takes the target frame and its landmarks plus a source image and its landmarks, and returns the
manipulated frame and a binary mask (uint8, 0/255) of the region it changed; pixels outside the mask are the
target's own. They are project implementations of the four FaceForensics++ families:

- FaceSwap: the source face's mesh warped onto the target's, colour-matched, Poisson-blended.
- Deepfakes: a generated (GAN) face warped onto the target, blurred to the generator's working resolution
  as an autoencoder's output is, colour-matched and feather-blended.
- Face2Face: the source's mouth and eye shapes transferred onto the target by warping the target itself.
- NeuralTextures: the mouth region alone re-shaped after the source and re-rendered (smoothed texture).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from dfpipe.data.landmarks import REGIONS

Manipulation = Callable[
    [np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None], tuple[np.ndarray, np.ndarray]
]


def delaunay(points: np.ndarray) -> np.ndarray:
    """Delaunay triangles (T, 3) over the given points, as indices into them."""
    lo = points.min(0) - 2
    hi = points.max(0) + 2
    subdiv = cv2.Subdiv2D((int(lo[0]), int(lo[1]), int(hi[0] - lo[0]) + 2, int(hi[1] - lo[1]) + 2))
    index = {}
    for i, p in enumerate(points):
        key = (float(p[0]), float(p[1]))
        index.setdefault(key, i)
        subdiv.insert(key)
    tris = []
    for t in subdiv.getTriangleList().reshape(-1, 3, 2):
        ids = [index.get((float(x), float(y))) for x, y in t]
        if None not in ids:
            tris.append(ids)
    return np.array(tris, dtype=np.int32).reshape(-1, 3)


def piecewise_affine(
    src: np.ndarray, src_pts: np.ndarray, dst_pts: np.ndarray, triangles: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Warp `src` so that each triangle of `src_pts` lands on the same triangle of `dst_pts`.

    Returns the warped image of size `shape` (h, w) and a 0/255 mask of the pixels the triangles cover. The warp
    is one `cv2.remap` over a per-pixel map built from the triangles' affine maps (one raster pass), which is
    far faster than warping every triangle separately."""
    h, w = shape
    d = dst_pts[triangles].astype(np.float64)  # (T, 3, 2)
    s = src_pts[triangles].astype(np.float64)
    e1, e2 = d[:, 1] - d[:, 0], d[:, 2] - d[:, 0]
    area = np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    keep = area > 1e-3
    d, s = d[keep], s[keep]
    # Affine A_k with A_k [x y 1]^T = src point, for every destination pixel of triangle k.
    dh = np.concatenate([d, np.ones((len(d), 3, 1))], axis=2)  # (T, 3, 3)
    affines = np.linalg.solve(dh, s).transpose(0, 2, 1)  # (T, 2, 3)
    ids = np.zeros((h, w), dtype=np.uint16)
    for k, tri in enumerate(np.round(d).astype(np.int32)):
        cv2.fillConvexPoly(ids, tri, k + 1)
    covered = ids > 0
    a = affines[np.maximum(ids.astype(np.int64) - 1, 0)]  # (h, w, 2, 3)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    map_x = (a[..., 0, 0] * xs + a[..., 0, 1] * ys + a[..., 0, 2]).astype(np.float32)
    map_y = (a[..., 1, 0] * xs + a[..., 1, 1] * ys + a[..., 1, 2]).astype(np.float32)
    warped = cv2.remap(src, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    return warped, covered.astype(np.uint8) * 255


def hull_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(points).astype(np.int32)), 255)
    return mask


def match_colour(src: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Give `src` the per-channel mean and spread (in Lab) that `ref` has inside `mask` (Reinhard transfer)."""
    sel = mask > 0
    if sel.sum() < 16:
        return src
    s = cv2.cvtColor(src, cv2.COLOR_RGB2LAB).astype(np.float32)
    r = cv2.cvtColor(ref, cv2.COLOR_RGB2LAB).astype(np.float32)
    s_mean, s_std = s[sel].mean(0), s[sel].std(0) + 1e-3
    r_mean, r_std = r[sel].mean(0), r[sel].std(0) + 1e-3
    out = (s - s_mean) * np.clip(r_std / s_std, 0.5, 2.0) + r_mean
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def _inner_face(points: np.ndarray, shape: tuple[int, int], shrink: float) -> np.ndarray:
    """The face-oval hull shrunk towards its centre (swaps keep the target's jaw line and hair)."""
    oval = points[REGIONS["oval"]]
    centre = oval.mean(0)
    return hull_mask(centre + shrink * (oval - centre), shape)


def _feather(mask: np.ndarray, width: float) -> np.ndarray:
    """Soft alpha (float, 0..1) that is 0 outside `mask`: eroded first so the blur never leaks past it."""
    k = max(1, int(round(width)))
    inner = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
    alpha = cv2.GaussianBlur(inner.astype(np.float32) / 255.0, (0, 0), width / 2)
    return np.where(mask > 0, alpha, 0.0)[..., None]


def _blend(fg: np.ndarray, bg: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return np.clip(fg.astype(np.float32) * alpha + bg.astype(np.float32) * (1 - alpha) + 0.5, 0, 255).astype(np.uint8)


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    m, _ = cv2.estimateAffinePartial2D(src.astype(np.float32), dst.astype(np.float32), method=cv2.LMEDS)
    if m is None:
        raise ValueError("could not align landmark sets (degenerate points)")
    return m


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return (pts @ m[:, :2].T + m[:, 2]).astype(np.float32)


def _swap_region(target_pts: np.ndarray, covered: np.ndarray, shrink: float) -> np.ndarray:
    """Inner face minus the target's mouth opening: the source's lips are stretched over it otherwise, while
    the target's own teeth and mouth interior stay plausible under any source mouth."""
    shape = covered.shape
    region = cv2.bitwise_and(_inner_face(target_pts, shape, shrink), covered)
    opening = hull_mask(target_pts[REGIONS["mouth_opening"]], shape)
    return cv2.bitwise_and(region, cv2.bitwise_not(opening))


def face_swap(
    target: np.ndarray,
    target_pts: np.ndarray,
    source: np.ndarray,
    source_pts: np.ndarray,
    triangles: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """FaceSwap: the source's face mesh onto the target's, colour-matched, Poisson-blended.

    Every method takes RGB uint8 frames and (468, 2) landmarks; `triangles` (from `delaunay` of the target's
    landmarks) can be fixed once per clip so the mesh topology does not change from frame to frame."""
    shape = target.shape[:2]
    tris = delaunay(target_pts) if triangles is None else triangles
    warped, covered = piecewise_affine(source, source_pts, target_pts, tris, shape)
    mask = _swap_region(target_pts, covered, 0.92)
    warped = match_colour(warped, target, mask)
    x, y, w, h = cv2.boundingRect(mask)
    if w < 4 or h < 4:
        return target.copy(), np.zeros(shape, np.uint8)
    # seamlessClone needs the mask's box strictly inside the frame; a 1-px margin keeps it there.
    inner = mask.copy()
    inner[:1], inner[-1:], inner[:, :1], inner[:, -1:] = 0, 0, 0, 0
    x, y, w, h = cv2.boundingRect(inner)
    centre = (x + w // 2, y + h // 2)
    # OpenCV 5's seamlessClone overwrites the mask it is given: hand it a copy.
    cloned = cv2.seamlessClone(warped, target, inner.copy(), centre, cv2.NORMAL_CLONE)
    # seamlessClone rewrites its whole bounding box; only the masked pixels are the swap.
    return np.where(inner[..., None] > 0, cloned, target), inner


def gan_swap(
    target: np.ndarray,
    target_pts: np.ndarray,
    source: np.ndarray,
    source_pts: np.ndarray,
    triangles: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Deepfakes: a generated face (source) onto the target, at an autoencoder's low working resolution."""
    shape = target.shape[:2]
    tris = delaunay(target_pts) if triangles is None else triangles
    warped, covered = piecewise_affine(source, source_pts, target_pts, tris, shape)
    mask = _swap_region(target_pts, covered, 0.9)
    # Classic deepfake autoencoders decode 64–128 px faces that are then upscaled: mimic that loss of detail.
    side = max(8.0, float(np.ptp(target_pts[:, 0])))
    factor = min(1.0, 80.0 / side)
    if factor < 1.0:
        small = cv2.resize(warped, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        warped = cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    warped = match_colour(warped, target, mask)
    out = _blend(warped, target, _feather(mask, max(2.0, 0.04 * side)))
    return out, mask


def _expression_points(
    target_pts: np.ndarray, source_pts: np.ndarray, regions: tuple[str, ...], gain: float
) -> np.ndarray:
    """Target landmarks with each region's shape replaced by the source's (aligned by a similarity fitted on
    that region, so only the shape — mouth opening, smile, eye openness — moves, not the target's placement)."""
    moved = target_pts.copy()
    for name in regions:
        idx = REGIONS[name]
        m = _similarity(source_pts[idx], target_pts[idx])
        moved[idx] = target_pts[idx] + gain * (_apply(m, source_pts[idx]) - target_pts[idx])
    return moved


def _moved_regions(
    target_pts: np.ndarray, moved: np.ndarray, regions: tuple[str, ...], grow: float, shape: tuple[int, int]
) -> np.ndarray:
    """Union of each region's hull (before and after the move), grown around its centre, inside the face."""
    mask = np.zeros(shape, np.uint8)
    for name in regions:
        pts = np.concatenate([target_pts[REGIONS[name]], moved[REGIONS[name]]])
        centre = pts.mean(0)
        mask = cv2.bitwise_or(mask, hull_mask(centre + grow * (pts - centre), shape))
    return cv2.bitwise_and(mask, _inner_face(target_pts, shape, 0.97))


def _self_warp(
    target: np.ndarray, target_pts: np.ndarray, moved: np.ndarray, region_mask: np.ndarray, triangles: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Warp the target onto its own moved landmarks; the oval stays put so nothing outside the face moves."""
    shape = target.shape[:2]
    tris = delaunay(target_pts) if triangles is None else triangles
    # Destination = moved points: sample the target where its original landmarks were.
    warped, covered = piecewise_affine(target, target_pts, moved, tris, shape)
    mask = cv2.bitwise_and(region_mask, covered)
    return warped, mask


def reenact(
    target: np.ndarray,
    target_pts: np.ndarray,
    source: np.ndarray,
    source_pts: np.ndarray,
    triangles: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Face2Face: transfer the source's mouth and eye expression onto the target's own face."""
    shape = target.shape[:2]
    parts = ("lips", "left_eye", "right_eye", "left_brow", "right_brow")
    moved = _expression_points(target_pts, source_pts, parts, gain=1.0)
    region = _moved_regions(target_pts, moved, parts, 1.6, shape)
    warped, mask = _self_warp(target, target_pts, moved, region, triangles)
    out = _blend(warped, target, _feather(mask, max(2.0, 0.03 * np.ptp(target_pts[:, 0]))))
    return out, mask


def mouth_resynthesis(
    target: np.ndarray,
    target_pts: np.ndarray,
    source: np.ndarray,
    source_pts: np.ndarray,
    triangles: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """NeuralTextures: only the mouth region is re-shaped after the source and re-rendered with a smoothed,
    slightly re-toned texture (a learned renderer's output lacks the fine skin detail of the original)."""
    shape = target.shape[:2]
    moved = _expression_points(target_pts, source_pts, ("lips",), gain=1.0)
    region = _moved_regions(target_pts, moved, ("lips",), 1.9, shape)
    warped, mask = _self_warp(target, target_pts, moved, region, triangles)
    rendered = cv2.bilateralFilter(warped, 7, 30, 5)
    lab = cv2.cvtColor(rendered, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab[..., 1] += 3.0  # a renderer's slight colour drift towards red in the lips
    rendered = cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
    out = _blend(rendered, target, _feather(mask, max(2.0, 0.03 * np.ptp(target_pts[:, 0]))))
    return out, mask


MANIPULATIONS: dict[str, Manipulation] = {
    "FaceSwap": face_swap,
    "Deepfakes": gan_swap,
    "Face2Face": reenact,
    "NeuralTextures": mouth_resynthesis,
}
