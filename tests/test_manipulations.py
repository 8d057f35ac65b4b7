"""Manipulations on a pair of real still faces: each must change the face inside its mask only, and leave a face
the landmarker still finds where the target's was."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from dfpipe.data.landmarks import REGIONS, Landmarker, face_size, smooth_track
from dfpipe.data.manipulations import MANIPULATIONS, delaunay, match_colour, piecewise_affine

SIZE = 256


def _framed(rgb: np.ndarray, lm: Landmarker) -> np.ndarray:
    """The face of a photo centred in a SIZE² frame at the demo's scale."""
    pts = lm.detect(rgb)
    assert pts is not None
    scale = 0.42 * SIZE / face_size(pts)
    c = (pts.min(0) + pts.max(0)) / 2
    m = np.array([[scale, 0, SIZE / 2 - scale * c[0]], [0, scale, SIZE / 2 - scale * c[1]]])
    return cv2.warpAffine(rgb, m, (SIZE, SIZE), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


@pytest.fixture(scope="module")
def landmarker():
    with Landmarker() as lm:
        yield lm


@pytest.fixture(scope="module")
def faces(landmarker):
    """Two real faces (scikit-image's astronaut, matplotlib's Grace Hopper) with their landmarks."""
    import matplotlib
    from skimage import data

    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    out = []
    for rgb in (np.ascontiguousarray(data.astronaut()), cv2.cvtColor(cv2.imread(str(hopper)), cv2.COLOR_BGR2RGB)):
        frame = _framed(rgb, landmarker)
        pts = landmarker.detect(frame)
        assert pts is not None and pts.shape == (468, 2)
        out.append((frame, pts))
    return out


@pytest.mark.parametrize("method", sorted(MANIPULATIONS))
@pytest.mark.parametrize("direction", [0, 1])
def test_manipulation_changes_only_the_masked_face(method, direction, faces, landmarker):
    (target, t_pts), (source, s_pts) = faces[direction], faces[1 - direction]
    out, mask = MANIPULATIONS[method](target, t_pts, source, s_pts)
    assert out.shape == target.shape and out.dtype == np.uint8
    assert mask.shape == target.shape[:2] and set(np.unique(mask)) <= {0, 255}
    inside = mask > 0
    # The mask lies on the face: inside the landmarks' box, and covering a real part of it.
    x0, y0 = np.floor(t_pts.min(0)).astype(int)
    x1, y1 = np.ceil(t_pts.max(0)).astype(int)
    assert not inside[: y0 - 2].any() and not inside[y1 + 2 :].any()
    assert not inside[:, : x0 - 2].any() and not inside[:, x1 + 2 :].any()
    assert inside.sum() > 0.03 * (x1 - x0) * (y1 - y0)
    diff = np.abs(out.astype(np.int16) - target.astype(np.int16)).max(axis=2)
    assert np.array_equal(out[~inside], target[~inside]), "pixels outside the mask changed"
    assert diff[inside].mean() > 3.0, "the masked region is hardly changed"
    # The result is still a face, in the target's place.
    found = landmarker.detect(out)
    assert found is not None, f"{method}: no face found in the manipulated image"
    assert np.linalg.norm(found - t_pts, axis=1).mean() < 0.1 * face_size(t_pts)


def test_swaps_bring_the_source_face(faces):
    """FaceSwap output is closer to the source than to the target inside its mask, once aligned."""
    (target, t_pts), (source, s_pts) = faces
    out, mask = MANIPULATIONS["FaceSwap"](target, t_pts, source, s_pts)
    warped, _ = piecewise_affine(source, s_pts, t_pts, delaunay(t_pts), target.shape[:2])

    def grad(im):
        return cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F)

    inside = cv2.erode(mask, np.ones((5, 5), np.uint8)) > 0
    to_source = np.abs(grad(out) - grad(warped))[inside].mean()
    to_target = np.abs(grad(out) - grad(target))[inside].mean()
    assert to_source < to_target


def test_piecewise_affine_moves_pixels_with_the_points():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    src = np.array([[8, 8], [56, 8], [56, 56], [8, 56], [30, 30]], np.float32)
    tris = delaunay(src)
    assert len(tris) == 4 and set(tris.ravel()) == set(range(5))
    same, covered = piecewise_affine(img, src, src, tris, (64, 64))
    inner = cv2.erode(covered, np.ones((3, 3), np.uint8)) > 0
    assert np.array_equal(same[inner], img[inner])
    shifted, covered = piecewise_affine(img, src, src + [3, 2], tris, (64, 64))
    assert np.array_equal(shifted[20:40, 20:40], img[18:38, 17:37])


def test_match_colour_takes_the_reference_statistics():
    rng = np.random.default_rng(1)
    src = rng.integers(40, 90, (32, 32, 3), dtype=np.uint8)
    ref = rng.integers(150, 220, (32, 32, 3), dtype=np.uint8)
    mask = np.full((32, 32), 255, np.uint8)
    out = match_colour(src, ref, mask)
    assert np.abs(out.reshape(-1, 3).mean(0) - ref.reshape(-1, 3).mean(0)).max() < 6


def test_regions_follow_the_mesh_topology():
    assert len(REGIONS["oval"]) == 36 and REGIONS["oval"].max() < 468
    assert 13 in REGIONS["mouth_opening"] and 0 not in REGIONS["mouth_opening"]
    assert set(REGIONS["mouth_opening"]) < set(REGIONS["lips"])


def test_smooth_track_fills_gaps_and_rejects_faceless_clips():
    a, b = np.zeros((468, 2), np.float32), np.full((468, 2), 3, np.float32)
    track = smooth_track([a, None, b], radius=0)
    assert np.array_equal(track[1], a) and np.array_equal(track[2], b)
    with pytest.raises(ValueError, match="no frame"):
        smooth_track([None, None])
