import subprocess
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from dfpipe.frames import UNREADABLE, iter_frames, plan_batch, sample_indices


def cv2_frames(path: Path) -> list[np.ndarray]:
    """Every frame read sequentially with OpenCV (RGB): the reference for what index i means."""
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    return out


@pytest.fixture(scope="module")
def clip(tmp_path_factory, carphone) -> Path:
    """2 s of carphone as H.264 with B-frames (decode order ≠ storage order), moov first so a truncated copy
    still opens."""
    dest = tmp_path_factory.mktemp("frames") / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(carphone), "-t", "2", "-c:v", "libx264", "-crf", "23",
                    "-bf", "3", "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-an", str(dest)], check=True)
    return dest


def test_sample_indices_spread_over_whole_video():
    idx = sample_indices(300, 32)
    assert len(idx) == 32 and len(set(idx)) == 32 and idx == sorted(idx)
    assert idx[0] < 300 / 32 and idx[-1] >= 300 - 300 / 32  # first and last segment both sampled
    gaps = np.diff(idx)
    assert gaps.min() >= 9 and gaps.max() <= 10  # evenly spaced, not the first 32 frames
    assert sample_indices(20, 32) == list(range(20))
    assert sample_indices(32, 32) == list(range(32))
    assert sample_indices(0, 32) == []
    assert sample_indices(33, 32)[-1] <= 32


def test_plan_batch_counts_overrides_and_unreadable():
    videos = pd.DataFrame([
        {"key": "original/000", "method": "original", "n_frames": 100, "status": "ok"},
        {"key": "NeuralTextures/000_001", "method": "NeuralTextures", "n_frames": 100, "status": "ok"},
        {"key": "original/002", "method": "original", "n_frames": 10, "status": "ok"},
        {"key": "original/003", "method": "original", "n_frames": 0, "status": "unreadable"},
    ])
    plan = plan_batch(videos, 32, {"NeuralTextures": 64})
    assert list(plan.columns) == ["key", "frame_index", "n_planned"]
    sizes = plan.groupby("key").size().to_dict()
    assert sizes == {"original/000": 32, "NeuralTextures/000_001": 64, "original/002": 10, "original/003": 1}
    assert set(plan.loc[plan.key == "NeuralTextures/000_001", "n_planned"]) == {64}
    assert plan.loc[plan.key == "original/000", "frame_index"].tolist() == sample_indices(100, 32)
    placeholder = plan[plan.key == "original/003"].iloc[0]
    assert placeholder.frame_index == UNREADABLE and placeholder.n_planned == 0


def test_iter_frames_positions_match_sequential_decoding(clip):
    reference = cv2_frames(clip)
    assert len(reference) == 60
    wanted = sample_indices(len(reference), 8)
    got = list(iter_frames(clip, wanted, threads=2))
    assert [i for i, _ in got] == wanted
    for index, frame in got:
        assert frame.shape == (144, 176, 3) and frame.dtype == np.uint8
        diffs = [np.abs(frame.astype(int) - ref).mean() for ref in reference]
        assert int(np.argmin(diffs)) == index  # the very frame, not a neighbour
        assert diffs[index] < 1.0


def test_iter_frames_every_frame_and_duplicates_in_request(clip):
    got = list(iter_frames(clip, [5, 0, 5, 59]))
    assert [i for i, _ in got] == [0, 5, 59]


def test_truncated_video_yields_what_decodes(clip, tmp_path):
    cut = tmp_path / "cut.mp4"
    data = clip.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    errors: list[str] = []
    got = list(iter_frames(cut, sample_indices(60, 16), on_error=errors.append))
    assert 0 < len(got) < 16
    assert [i for i, _ in got] == sample_indices(60, 16)[: len(got)]
    assert len(errors) == 1 and str(cut) in errors[0] and f"after {len(got)} of 16" in errors[0]


def test_indices_beyond_the_end_are_reported(clip):
    errors: list[str] = []
    got = list(iter_frames(clip, [10, 70], on_error=errors.append))
    assert [i for i, _ in got] == [10]
    assert errors and "after 1 of 2" in errors[0]


def test_non_video_raises_naming_the_file(tmp_path):
    junk = tmp_path / "notes.mp4"
    junk.write_text("this is not a video\n" * 50)
    with pytest.raises(ValueError, match=r"notes\.mp4: not a readable video"):
        list(iter_frames(junk, [0, 1]))
    with pytest.raises(ValueError, match=r"missing\.mp4"):
        list(iter_frames(tmp_path / "missing.mp4", [0]))


def test_stopping_early_ends_the_decoder(clip):
    frames = iter_frames(clip, [1, 2, 3])
    index, _ = next(frames)
    frames.close()  # must not hang or leave ffmpeg running
    assert index == 1
