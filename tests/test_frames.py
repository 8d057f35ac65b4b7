import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import encode_clip, tag_rotation
from PIL import Image

from dfpipe.data.frames import (
    UNREADABLE,
    damaged_frames,
    display_size,
    iter_frames,
    plan_batch,
    sample_indices,
    select_expression,
    video_rotation,
    video_size,
)


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
    return encode_clip(carphone, dest, 0, 2, extra=("-bf", "3", "-movflags", "+faststart"))


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
    videos = pd.DataFrame(
        [
            {"key": "original/000", "method": "original", "n_frames": 100, "status": "ok"},
            {"key": "NeuralTextures/000_001", "method": "NeuralTextures", "n_frames": 100, "status": "ok"},
            {"key": "original/002", "method": "original", "n_frames": 10, "status": "ok"},
            {"key": "original/003", "method": "original", "n_frames": 0, "status": "unreadable"},
        ]
    )
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


def corrupt_packet(src: Path, dest: Path, frame_pts_rank: int) -> None:
    """Copy `src` with one packet overwritten by noise after its first 8 bytes: the packet of the frame
    shown `frame_pts_rank`-th. Its size field stays intact, so the frame is still output, concealed. (Noise
    deeper inside a CABAC slice often decodes without any complaint: such damage no decoder reports.)"""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts,pos,size",
            "-of",
            "json",
            str(src),
        ],
        capture_output=True,
        check=True,
        text=True,
    )
    packets = sorted(json.loads(out.stdout)["packets"], key=lambda p: int(p["pts"]))
    target = packets[frame_pts_rank]
    pos, size = int(target["pos"]), int(target["size"])
    data = bytearray(src.read_bytes())
    data[pos + 8 : pos + size - 20] = np.random.default_rng(1).integers(0, 256, size - 28, dtype=np.uint8).tobytes()
    dest.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def gop_clip(tmp_path_factory, carphone) -> Path:
    """2 s of carphone with a key frame every 15 frames and B-frames."""
    dest = tmp_path_factory.mktemp("gop") / "gop.mp4"
    keyframes = ("-x264-params", "keyint=15:min-keyint=15:scenecut=0")
    return encode_clip(carphone, dest, 0, 2, extra=("-bf", "3", *keyframes, "-movflags", "+faststart"))


def test_frames_after_a_decoder_error_are_named_until_the_next_key_frame(gop_clip, tmp_path):
    bad = tmp_path / "bad.mp4"
    corrupt_packet(gop_clip, bad, 19)  # a P frame of the second group of pictures (frames 15-29)
    clean = dict(iter_frames(gop_clip, range(60)))
    damaged: dict[int, str] = {}
    got = dict(iter_frames(bad, range(60), on_damaged=damaged.__setitem__))
    assert sorted(got) == list(range(60))  # error concealment still outputs every frame
    smeared = {i for i in got if np.abs(got[i].astype(int) - clean[i]).mean() > 0.5}
    # Exactly the smeared frames: the damaged P frame, the B-frames shown before it that predict from it,
    # and every later frame up to the key frame at 30; frames before 15 and from 30 on are intact.
    assert smeared and set(damaged) == smeared, (sorted(damaged), sorted(smeared))
    assert min(damaged) > 15 and max(damaged) < 30
    assert all(str(bad) in m and "with no key frame in between" in m for m in damaged.values())
    none: dict[int, str] = {}
    list(iter_frames(gop_clip, range(60), on_damaged=none.__setitem__))
    assert none == {}  # a clean video reports nothing


def test_damaged_frames_reads_the_decoding_order_from_the_log():
    """Unit check of the log reading: errors belong to the packet just read, demuxer errors to the next;
    packets of another video stream (a cover picture) do not count."""

    def packet(pts, stream=0):
        return f"[info] demuxer -> ist_index:{stream} type:video next_dts:0 pkt_pts:{pts} pkt_pts_time:0"

    def frame(n, pts, key=0):
        return f"[Parsed_showinfo_0 @ 0x1] [info] n:{n:4d} pts:{pts:7d} pts_time:0 iskey:{key} type:P"

    log = "\n".join(
        [
            "[info] Input #0, mov,mp4, from 'x.mp4':",
            "[info]   Stream #0:0 (h264) -> showinfo:default",
            packet(0),
            frame(0, 0, 1),
            packet(2),
            packet(1),
            frame(1, 1),
            "[NULL @ 0x2] [error] parser complaint about the next packet",
            frame(2, 2),
            packet(4),
            "[h264 @ 0x3] [error] broken macroblock",
            packet(0, stream=1),
            packet(3),
            frame(3, 3),
            frame(4, 4),
            packet(5),
            frame(5, 5, 1),
            "[mov,mp4 @ 0x4] [error] partial file",
            packet(6),
            frame(6, 6),
        ]
    )
    assert damaged_frames(log) == {3: "broken macroblock", 4: "broken macroblock", 6: "partial file"}


def test_rotation_metadata_is_applied_with_matching_frame_size(carphone, tmp_path):
    """Pixels turned with a display matrix turning them back come out upright; upright pixels with a stray
    rotation tag come out turned, as any player shows them. Either way the frame size is the decoded one."""
    upright = encode_clip(carphone, tmp_path / "upright.mp4", 0, 0.5, crf=18)
    turned = tag_rotation(
        encode_clip(carphone, tmp_path / "t.mp4", 0, 0.5, "transpose=clock", crf=18), tmp_path / "turned.mp4"
    )
    tag_rotation(upright, tmp_path / "wrong.mp4")
    reference = dict(iter_frames(upright, [3]))[3]
    assert video_size(turned) == (176, 144) and video_rotation(turned) == 90
    restored = dict(iter_frames(turned, [3]))[3]
    assert restored.shape == (144, 176, 3) and np.abs(restored.astype(int) - reference).mean() < 3
    assert video_size(tmp_path / "wrong.mp4") == (144, 176)
    sideways = dict(iter_frames(tmp_path / "wrong.mp4", [3]))[3]
    assert sideways.shape == (176, 144, 3)
    assert np.abs(sideways.astype(int) - np.rot90(reference)).mean() < 1  # a quarter turn counter-clockwise


def test_every_quarter_turn_of_a_video_comes_out_as_shown(carphone, tmp_path):
    """Display rotations of 90, 180 and 270° (counter-clockwise) turn the decoded frame by as many quarter turns,
    through the same table as an image's EXIF orientation."""
    upright = encode_clip(carphone, tmp_path / "upright.mp4", 0, 0.2, crf=18)
    reference = dict(iter_frames(upright, [2]))[2]
    for quarters in (1, 2, 3):
        turned = tag_rotation(upright, tmp_path / f"r{quarters}.mp4", 90 * quarters)
        frame = dict(iter_frames(turned, [2]))[2]
        expected = np.rot90(reference, quarters)
        assert video_size(turned) == (expected.shape[1], expected.shape[0]) and frame.shape == expected.shape
        assert np.abs(frame.astype(int) - expected).mean() < 1, quarters


# Pillow's table (ImageOps.exif_transpose): the transform that shows an image of each EXIF orientation upright
SHOWN = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@pytest.mark.parametrize("code", range(1, 9))
def test_exif_orientation_is_applied_in_every_image_format(code, tmp_path):
    """An image stored with EXIF Orientation `code` comes out as a viewer shows it, in JPEG, PNG, WebP and TIFF
    alike: the stored pixels transposed as the tag says, and the frame size with them."""
    y, x = np.mgrid[0:48, 0:80]
    image = Image.fromarray(np.stack([x * 3, y * 5, (x + y) * 2], axis=-1).astype(np.uint8))
    exif = image.getexif()
    exif[0x0112] = code
    shown = {c: np.asarray(image if how is None else image.transpose(how)).astype(int) for c, how in SHOWN.items()}
    for suffix, options in ((".jpg", {"quality": 95}), (".png", {}), (".webp", {"lossless": True}), (".tiff", {})):
        path = tmp_path / f"o{code}{suffix}"
        image.save(path, exif=exif, **options)
        frame = dict(iter_frames(path, [0]))[0].astype(int)
        assert frame.shape == shown[code].shape and video_size(path) == frame.shape[1::-1], suffix
        assert np.abs(frame - shown[code]).mean() < 2, suffix
        diffs = {c: np.abs(frame - pixels).mean() for c, pixels in shown.items() if pixels.shape == frame.shape}
        assert min(diffs, key=diffs.__getitem__) == code, suffix


def test_display_size_follows_ffmpeg_autorotation():
    stream = {"width": 176, "height": 144}
    assert display_size(stream) == (176, 144)
    assert display_size({**stream, "side_data_list": [{"rotation": -90}]}) == (144, 176)
    assert display_size({**stream, "side_data_list": [{"rotation": 270.4}]}) == (144, 176)
    assert display_size({**stream, "side_data_list": [{"rotation": 180}]}) == (176, 144)
    assert display_size({**stream, "side_data_list": [{"rotation": 45}]}) == (176, 144)  # rotated in place
    assert display_size({**stream, "tags": {"rotate": "90"}}) == (144, 176)


def test_more_than_a_hundred_wanted_frames(carphone):
    """ffmpeg's expression parser refuses a flat sum of more than 100 eq() terms: all 120 frames of
    carphone, and every other one, must still come out."""
    assert [i for i, _ in iter_frames(carphone, range(120))] == list(range(120))
    assert [i for i, _ in iter_frames(carphone, range(1, 120, 2))] == list(range(1, 120, 2))
    assert select_expression([1, 2, 3, 5, 9, 10]) == "(between(n,1,3)+eq(n,5)+between(n,9,10))"
