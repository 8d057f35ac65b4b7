"""Faulty videos through the manifest and the faces stage, called directly (no Snakemake).

Every case puts one faulty video, `original/001`, in a batch beside an intact one, `original/000`, and
checks (a) the status and reason of the faulty one (unreadable files named relative to the dataset root),
(b) that the intact neighbour gives exactly what it gives alone, and (c) where the fault is the file
itself, that replacing it with a good file and rerunning gives what a clean run gives."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import encode_clip, tag_rotation
from logcapture import dfpipe_lines

from dfpipe import assets
from dfpipe.data import faces, manifest
from dfpipe.data.frames import plan_batch
from dfpipe.data.layout import video_dir

SETTINGS = {
    "size": 128,
    "margin": 1.3,
    "align": True,
    "min_confidence": 0.5,
    "min_face_size": 32,
    "min_faces_per_video": 4,
}
PER_VIDEO = 6
FOLDER = video_dir("original", "c23")
FAULTY = f"{FOLDER}/001.mp4"
COMPARED = ["frame_index", "status", "reason", "score", "box", "keypoints", "crop_png"]


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def h264(dest: Path, *args: str) -> Path:
    ffmpeg(*args, "-c:v", "libx264", "-crf", "23", "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-an", str(dest))
    return dest


@pytest.fixture(scope="module")
def model() -> Path:
    return assets.face_detector_model()


@pytest.fixture(scope="module")
def good(tmp_path_factory, carphone) -> Path:
    """1 s (30 frames) of carphone, header (moov) first, as every faulty case's intact neighbour and
    replacement."""
    folder = tmp_path_factory.mktemp("good")
    encode_clip(carphone, folder / "tail.mp4", start=0, seconds=1)
    ffmpeg("-i", str(folder / "tail.mp4"), "-c", "copy", "-movflags", "+faststart", str(folder / "good.mp4"))
    return folder / "good.mp4"


def dataset(root: Path, good: Path, faulty: Path | None) -> Path:
    """An FF++-layout tree holding the intact 000 and, as 001, `faulty` (or a copy of the intact clip)."""
    (root / FOLDER).mkdir(parents=True)
    shutil.copy(good, root / FOLDER / "000.mp4")
    shutil.copy(faulty or good, root / FAULTY)
    (root / "splits").mkdir()
    for split, pairs in (("train", [["000", "001"]]), ("val", []), ("test", [])):
        (root / "splits" / f"{split}.json").write_text(json.dumps(pairs))
    return root


def run(root: Path, model: Path, per_video: int = PER_VIDEO) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Manifest, faces table and face summary of the tree, as the manifest and faces rules make them."""
    with dfpipe_lines() as logged:
        m = manifest.build(root, root / "splits", [], "c23", videos_per_job=50, threads=2)
        plan = plan_batch(m, per_video, {})
        table = faces.crop_batch(plan, m, root, SETTINGS, model, threads=2)
    assert list(zip(table.key, table.frame_index)) == list(zip(plan.key, plan.frame_index)), "nothing dropped"
    for text in [*m.error.dropna(), *table.reason.dropna(), *logged]:
        assert str(root) not in text and "/tmp/" not in text, text  # nothing absolute stored or logged
    return m.set_index("key"), table, faces.summarize(table, SETTINGS["min_faces_per_video"]).set_index("key")


def rows(table: pd.DataFrame, key: str) -> pd.DataFrame:
    """One video's rows in a form that compares exactly (geometry lists as tuples)."""
    part = table[table.key == key][COMPARED].reset_index(drop=True)
    for name in ("box", "keypoints"):
        part[name] = [tuple(v) if v is not None else None for v in part[name]]
    return part


@pytest.fixture(scope="module")
def clean(tmp_path_factory, good, model) -> pd.DataFrame:
    """The faces table of a run without any fault: both videos intact."""
    return run(dataset(tmp_path_factory.mktemp("clean"), good, None), model)[1]


def check(
    tmp_path: Path,
    good: Path,
    model: Path,
    clean: pd.DataFrame,
    faulty: Path,
    rerun: bool = True,
    per_video: int = PER_VIDEO,
):
    """Run a batch with `faulty` as 001; check the neighbour is untouched and (`rerun`) that replacing
    the faulty file with the intact clip gives the clean run's rows. Returns the faulty run's results."""
    root = dataset(tmp_path / "ffpp", good, faulty)
    m, table, summary = run(root, model, per_video)
    if per_video == PER_VIDEO:
        pd.testing.assert_frame_equal(rows(table, "original/000"), rows(clean, "original/000"))
    else:
        assert (table[table.key == "original/000"].status == "ok").all()
    assert m.loc["original/000", "status"] == "ok" and summary.loc["original/000", "ok"] == min(per_video, 30)
    if rerun:
        shutil.copy(good, root / FAULTY)
        _, again, _ = run(root, model)
        pd.testing.assert_frame_equal(rows(again, "original/001"), rows(clean, "original/001"))
    return m.loc["original/001"], table[table.key == "original/001"], summary.loc["original/001"]


def decode(png: bytes) -> np.ndarray:
    return faces.cv2.imdecode(np.frombuffer(png, np.uint8), faces.cv2.IMREAD_COLOR)


def assert_unreadable(video, table, summary, detail: str) -> None:
    assert video.status == "unreadable" and video.n_frames == 0
    assert video.error.startswith(f"{FAULTY}: ") and detail in video.error, video.error
    assert table.frame_index.tolist() == [-1] and table.status.tolist() == ["not_decoded"]
    assert table.reason.iloc[0] == f"video unreadable: {video.error}"
    assert summary.planned == 0 and summary.too_few


def test_truncated(tmp_path, good, model, clean):
    """Truncated video (cut at 60 %, header first): real frame count kept, frames past the cut not ok."""
    data = good.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: int(len(data) * 0.6)])
    video, table, summary = check(tmp_path, good, model, clean, tmp_path / "cut.mp4")
    assert video.status == "ok" and 0 < video.n_frames < 30
    assert table.frame_index.max() < video.n_frames  # planned over what is really there
    ok = table[table.status == "ok"]
    assert len(ok) > 0 and set(table.status) <= {"ok", "decode_error", "not_decoded"}
    for row in table[table.status == "not_decoded"].itertuples():
        assert row.reason.startswith(f"frame {row.frame_index} not decoded: {FAULTY}: decoding stopped")


def test_truncated_header_last(tmp_path, good, model, clean, carphone):
    """Truncated video with its header (moov) at the end, as encoders write it: unreadable, named."""
    tail = encode_clip(carphone, tmp_path / "tail.mp4", start=0, seconds=1)
    data = tail.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    assert_unreadable(*check(tmp_path, good, model, clean, tmp_path / "cut.mp4"), "moov atom not found")


def test_zero_byte(tmp_path, good, model, clean):
    """Zero-byte video: unreadable, named relative to the dataset root."""
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert_unreadable(*check(tmp_path, good, model, clean, tmp_path / "empty.mp4"), "Invalid data")


def test_not_a_video(tmp_path, good, model, clean):
    """Text file named .mp4: unreadable, named relative to the dataset root."""
    (tmp_path / "notes.mp4").write_text("meeting notes, not a video\n" * 40)
    assert_unreadable(*check(tmp_path, good, model, clean, tmp_path / "notes.mp4"), "Invalid data")


def test_audio_only(tmp_path, good, model, clean):
    """Audio-only .mp4: unreadable for lack of a video stream."""
    ffmpeg("-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac", str(tmp_path / "audio.mp4"))
    assert_unreadable(*check(tmp_path, good, model, clean, tmp_path / "audio.mp4"), "no video stream")


def test_one_frame(tmp_path, good, model, clean, carphone):
    """1-frame video: one planned frame, cropped."""
    h264(tmp_path / "one.mp4", "-i", str(carphone), "-frames:v", "1")
    video, table, summary = check(tmp_path, good, model, clean, tmp_path / "one.mp4")
    assert video.status == "ok" and video.n_frames == 1
    assert table.frame_index.tolist() == [0] and table.status.tolist() == ["ok"]
    assert summary.planned == 1 and summary.too_few  # below min_faces_per_video, flagged


def test_shorter_than_planned(tmp_path, good, model, clean, carphone):
    """Shorter than planned (3 frames, 6 wanted): every frame used once, the video flagged as too few."""
    h264(tmp_path / "short.mp4", "-i", str(carphone), "-frames:v", "3")
    video, table, summary = check(tmp_path, good, model, clean, tmp_path / "short.mp4")
    assert video.n_frames == 3 and table.frame_index.tolist() == [0, 1, 2]
    assert (table.status == "ok").all() and summary.planned == 3 and summary.too_few


def test_4k(tmp_path, good, model, clean, carphone):
    """4K video (3840x2160, 1 s): decoded at full size and cropped like any other."""
    ffmpeg(
        "-i",
        str(carphone),
        "-t",
        "1",
        "-vf",
        "scale=3840:2160",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-an",
        str(tmp_path / "4k.mp4"),
    )
    video, table, summary = check(tmp_path, good, model, clean, tmp_path / "4k.mp4", rerun=False, per_video=3)
    assert (video.width, video.height) == (3840, 2160)
    assert (table.status == "ok").all() and len(table) == 3
    assert all(b[2] > 500 for b in table.box)  # the face box is in 4K frame pixels
    assert decode(table.crop_png.iloc[0]).shape == (128, 128, 3)


def test_rotated_with_metadata(tmp_path, good, model, clean):
    """Rotated pixels with a display matrix turning them back: decoded upright, same crops as the original."""
    ffmpeg(
        "-i",
        str(good),
        "-vf",
        "transpose=clock",
        "-c:v",
        "libx264",
        "-crf",
        "23",
        "-pix_fmt",
        "yuv420p",
        str(tmp_path / "turned_raw.mp4"),
    )
    tag_rotation(tmp_path / "turned_raw.mp4", tmp_path / "turned.mp4")
    video, table, summary = check(tmp_path, good, model, clean, tmp_path / "turned.mp4")
    assert (video.width, video.height) == (176, 144)  # the decoded size, not the stored 144x176
    assert (table.status == "ok").all()
    reference = clean[clean.key == "original/001"]
    moved = np.abs(np.array(table.box.tolist()) - np.array(reference.box.tolist())).max()
    assert moved < 6, moved  # the same face at the same place (re-encoding shifts the box by a pixel or two)


def test_rotated_wrongly(tmp_path, good, model, clean):
    """Upright pixels, metadata rotate=90: collapsed-keypoint frames flagged, every ok crop a level face.

    The detector follows some of the sideways faces correctly, and alignment levels those: they may stay ok."""
    tag_rotation(good, tmp_path / "wrong.mp4")
    video, table, summary = check(tmp_path, good, model, clean, tmp_path / "wrong.mp4", per_video=30)
    assert (video.width, video.height) == (144, 176)
    flagged = table[table.status.isin(["collapsed_keypoints", "poor_alignment"])]
    assert len(flagged) >= 15, table.status.tolist()
    assert flagged.reason.str.contains("90° rotation metadata").all() and flagged.crop_png.isna().all()
    assert summary.collapsed_keypoints + summary.poor_alignment == len(flagged)
    with faces._detector(model, 0.5) as detector:
        for png in table[table.status == "ok"].crop_png:
            crop = faces.cv2.cvtColor(decode(png), faces.cv2.COLOR_BGR2RGB)
            found = faces._detections(detector, crop)
            assert found, "an ok crop without a face"
            eyes = max(found, key=lambda f: f[0])[2][:2]
            dx, dy = eyes[1] - eyes[0]
            assert dx > 0 and abs(dy) < 0.4 * dx, eyes  # upright, eyes roughly level


def test_grayscale(tmp_path, good, model, clean):
    """Grayscale video (luma only, full range): decoded to grey RGB, faces found."""
    h264(tmp_path / "grey.mp4", "-i", str(good), "-vf", "format=gray")
    video, table, summary = check(tmp_path, good, model, clean, tmp_path / "grey.mp4")
    assert (table.status == "ok").all()
    crop = decode(table.crop_png.iloc[0])
    assert np.abs(crop[..., 0].astype(int) - crop[..., 2]).max() <= 2  # still grey after cropping


def test_odd_size(tmp_path, good, model, clean):
    """Odd-size video (175x143, 4:4:4): exact size kept, faces found."""
    ffmpeg("-i", str(good), "-vf", "scale=175:143", "-c:v", "libx264", "-pix_fmt", "yuv444p", str(tmp_path / "odd.mp4"))
    video, table, summary = check(tmp_path, good, model, clean, tmp_path / "odd.mp4")
    assert (video.width, video.height) == (175, 143)
    assert (table.status == "ok").all()


def test_variable_frame_rate(tmp_path, good, model, clean):
    """VFR video (frames dropped unevenly, timestamps kept): planned over its real 16 frames, all cropped."""
    ffmpeg(
        "-i",
        str(good),
        "-vf",
        "select='lt(n,10)+not(mod(n,3))'",
        "-fps_mode",
        "vfr",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        str(tmp_path / "vfr.mp4"),
    )
    video, table, summary = check(tmp_path, good, model, clean, tmp_path / "vfr.mp4")
    assert video.n_frames == 16 and table.frame_index.max() < 16
    assert (table.status == "ok").all() and summary.planned == PER_VIDEO


def test_corrupt_stretch(tmp_path, good, model, clean):
    """Corrupt stretch mid-file (2 KB of noise at half the file): frames after it are decode_error, not ok."""
    data = bytearray(good.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2048] = np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8).tobytes()
    (tmp_path / "corrupt.mp4").write_bytes(bytes(data))
    video, table, summary = check(tmp_path, good, model, clean, tmp_path / "corrupt.mp4", per_video=30)
    statuses = table.status.tolist()
    assert "decode_error" in statuses and statuses[0] == "ok"
    first = statuses.index("decode_error")
    # one key frame in this clip: nothing after the damage is clean again
    assert set(statuses[first:]) <= {"decode_error", "not_decoded"}, statuses
    assert table[table.status == "decode_error"].reason.str.match(rf"{FAULTY}: frame \d+ predicts from a packet").all()
    assert summary.decode_error == statuses.count("decode_error")


def test_no_face(tmp_path, good, model, clean):
    """No face (blurred noise): every planned frame no_face, the video flagged as too few."""
    h264(
        tmp_path / "noise.mp4",
        "-f",
        "lavfi",
        "-i",
        "color=c=gray:s=176x144:r=30:d=1",
        "-vf",
        "noise=alls=100:allf=t,gblur=sigma=2",
    )
    video, table, summary = check(tmp_path, good, model, clean, tmp_path / "noise.mp4")
    assert video.status == "ok" and (table.status == "no_face").all() and table.crop_png.isna().all()
    assert summary.no_face == PER_VIDEO and summary.too_few


def test_several_faces(tmp_path, good, model, clean):
    """Two faces side by side: the track keeps the bigger one in every frame."""
    h264(
        tmp_path / "two.mp4",
        "-i",
        str(good),
        "-i",
        str(good),
        "-filter_complex",
        "[0]scale=264:216[a];[1]pad=176:216:0:36[b];[a][b]hstack",
    )
    video, table, summary = check(tmp_path, good, model, clean, tmp_path / "two.mp4")
    assert (table.status == "ok").all()
    xs = np.array([b[0] for b in table.box])
    sizes = np.array([b[2] for b in table.box])
    assert (xs + sizes < 264).all() and (sizes > 60).all(), (xs, sizes)  # the larger person on the left
