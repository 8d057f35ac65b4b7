import json
import shutil
import subprocess

import pandas as pd
import pytest
from conftest import encode_clip, stream_copy, tag_rotation
from logcapture import dfpipe_lines

from dfpipe.data import manifest, sources
from dfpipe.data.layout import video_dir
from dfpipe.data.sources.local import check_tree


@pytest.fixture()
def tree(tmp_path, ffpp_tree):
    root = tmp_path / "ffpp"
    shutil.copytree(ffpp_tree, root)
    return root


def build(root, per_job=4):
    return manifest.build(root, root / "splits", ["Deepfakes"], "c23", per_job, threads=2)


def test_manifest_rows_and_columns(tree):
    m = build(tree)
    assert list(m.columns) == manifest.COLUMNS
    assert len(m) == 12 and set(m.method) == {"original", "Deepfakes"}
    assert (m.status == "ok").all()
    assert (
        m.set_index("key").loc["Deepfakes/000_001", "mask_path"]
        == "manipulated_sequences/Deepfakes/masks/videos/000_001.mp4"
    )
    assert m[m.method == "original"].mask_path.isna().all()
    assert (m.label == (m.method != "original")).all()
    # 0.5 s of a 29.97 fps clip, probed exactly
    assert (m.n_frames == 15).all() and (m.fps.round(2) == 29.97).all() and (m.width == 176).all()
    assert not m.path.str.startswith("/").any(), "paths are stored relative to the dataset root"


def test_splits_follow_identity_pairs_and_never_mix(tree):
    m = build(tree)
    by_key = m.set_index("key").split
    assert by_key["original/000"] == by_key["Deepfakes/000_001"] == by_key["Deepfakes/001_000"] == "train"
    assert by_key["original/004"] == "test"
    ids_per_split = {s: set(v.str.split("_").explode()) for s, v in m.groupby("split").video_id}
    assert not (ids_per_split["train"] & ids_per_split["val"]) and not (ids_per_split["val"] & ids_per_split["test"])


def test_batches_are_per_method_and_stable(tree):
    m = build(tree, per_job=4)
    assert manifest.batches(m) == [("Deepfakes", 0), ("Deepfakes", 1), ("original", 0), ("original", 1)]
    assert m.groupby(["method", "batch"]).size().max() == 4
    # removing a fake does not renumber the originals' batches
    (tree / video_dir("Deepfakes", "c23") / "004_005.mp4").unlink()
    m2 = build(tree, per_job=4)
    orig = lambda t: t[t.method == "original"].set_index("key").batch  # noqa: E731
    pd.testing.assert_series_equal(orig(m), orig(m2))


def test_truncated_and_non_video_files_are_reported_by_name(tree):
    folder = tree / video_dir("original", "c23")
    data = (folder / "002.mp4").read_bytes()
    (folder / "002.mp4").write_bytes(data[: len(data) // 2])  # cut mid-file
    (folder / "003.mp4").write_text("this is not a video\n")
    with dfpipe_lines() as lines:
        m = build(tree).set_index("key")
    assert m.loc["original/003", "status"] == "unreadable"
    assert "original_sequences/youtube/c23/videos/003.mp4" in m.loc["original/003", "error"]
    assert any("003.mp4" in line for line in lines)
    # a truncated file still holds some frames: it stays usable, with its real (smaller) frame count
    assert m.loc["original/002", "status"] in {"ok", "unreadable"}
    if m.loc["original/002", "status"] == "ok":
        assert 0 < m.loc["original/002", "n_frames"] < 15
    assert len(m) == 12, "nothing is dropped"


def test_missing_folders_and_splits_are_clear_errors(tree, tmp_path):
    shutil.rmtree(tree / video_dir("Deepfakes", "c23"))
    with pytest.raises(FileNotFoundError, match="manipulated_sequences/Deepfakes/c23/videos"):
        check_tree(tree, ["Deepfakes"], "c23")
    with pytest.raises(FileNotFoundError, match="manipulated_sequences/Deepfakes/c23/videos"):
        build(tree)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        check_tree(tmp_path / "nowhere", ["Deepfakes"], "c23")
    (tree / "splits" / "val.json").unlink()
    with pytest.raises(FileNotFoundError, match="val.json"):
        manifest.build(tree, tree / "splits", [], "c23", 4)


def test_identity_in_two_splits_is_refused(tree):
    (tree / "splits" / "val.json").write_text('[["000", "003"]]')
    with pytest.raises(ValueError, match="identity 000"):
        build(tree)


def test_local_source_uses_the_tree_in_place(tree, tmp_path):
    cfg = {
        "source": "local",
        "local": {"root": str(tree)},
        "dataset": {"methods": ["Deepfakes"], "compression": "c23"},
        "splits": {"dir": None},
    }
    info = sources.prepare(cfg, tmp_path / "out")
    assert info.dataset_root == tree and info.splits_dir == tree / "splits"
    assert not (tmp_path / "out").exists(), "a local source copies nothing"


def test_unreadable_errors_name_files_relative_to_the_root(tree):
    """ffprobe's own message repeats the absolute path it was given: the stored error must not."""
    folder = tree / video_dir("original", "c23")
    (folder / "003.mp4").write_text("this is not a video\n")
    (folder / "004.mp4").write_bytes(b"")
    m = build(tree).set_index("key")
    for key in ("original/003", "original/004"):
        error = m.loc[key, "error"]
        assert m.loc[key, "status"] == "unreadable"
        assert error.startswith(f"original_sequences/youtube/c23/videos/{key[-3:]}.mp4: "), error
        assert str(tree) not in error and "/tmp" not in error, error
    assert "Invalid data" in m.loc["original/003", "error"]


def test_relative_text_cuts_every_spelling_of_the_root(tmp_path):
    root = tmp_path / "data"
    (tmp_path / "link").symlink_to(tmp_path, target_is_directory=True)
    linked = tmp_path / "link" / "data"
    text = f"{linked}/a/x.mp4: bad; {root.resolve()}/b.mp4 too"
    assert manifest.relative_text(text, linked) == "a/x.mp4: bad; b.mp4 too"


def test_truncated_video_keeps_its_real_frame_count(tree):
    """A cut file that still decodes is ok with the frames it really holds, and the plan stays
    inside them (the container header still claims all 15)."""
    from dfpipe.data.frames import iter_frames, plan_batch

    path = tree / video_dir("original", "c23") / "002.mp4"
    stream_copy(path, path.with_suffix(".tmp.mp4"), "-movflags", "+faststart")
    data = path.with_suffix(".tmp.mp4").read_bytes()
    path.with_suffix(".tmp.mp4").unlink()
    path.write_bytes(data[: int(len(data) * 0.6)])  # header first, so the cut file still opens
    header = json.loads(
        subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_streams", "-of", "json", str(path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert int(header["streams"][0]["nb_frames"]) == 15
    m = build(tree).set_index("key")
    row = m.loc["original/002"]
    decodable = sum(1 for _ in iter_frames(path, range(15)))
    assert row.status == "ok" and 0 < row.n_frames < 15
    assert decodable <= row.n_frames <= decodable + 1  # packets counted: at most one cut packet more
    assert row.duration == pytest.approx(row.n_frames / row.fps)
    plan = plan_batch(m.reset_index().query("key == 'original/002'"), 32, {})
    assert plan.frame_index.tolist() == list(range(row.n_frames))


def test_rotated_videos_record_the_decoded_frame_size(tree, carphone):
    """Both kinds of rotated video: the manifest's width × height is what the decoder outputs."""
    from dfpipe.data.frames import iter_frames

    folder = tree / video_dir("original", "c23")
    turned, wrong = folder / "000.mp4", folder / "001.mp4"
    for dest, vf in ((turned, "transpose=clock"), (wrong, "null")):
        tag_rotation(encode_clip(carphone, folder / "tmp.mp4", 0, 0.5, vf), dest)
    (folder / "tmp.mp4").unlink()
    m = build(tree).set_index("key")
    for key, path, size in (("original/000", turned, (176, 144)), ("original/001", wrong, (144, 176))):
        frame = next(iter(iter_frames(path, [0])))[1]
        assert (m.loc[key, "width"], m.loc[key, "height"]) == size == (frame.shape[1], frame.shape[0])
