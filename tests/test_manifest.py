import shutil

import pandas as pd
import pytest

from dfpipe import manifest, sources
from dfpipe.layout import video_dir
from dfpipe.sources.local import check_tree


@pytest.fixture()
def tree(tmp_path, ffpp_tree):
    root = tmp_path / "ffpp"
    shutil.copytree(ffpp_tree, root)
    return root


def build(root, per_job=4, log=print):
    return manifest.build(root, root / "splits", ["Deepfakes"], "c23", per_job, threads=2, log=log)


def test_manifest_rows_and_columns(tree):
    m = build(tree)
    assert list(m.columns) == manifest.COLUMNS
    assert len(m) == 12 and set(m.method) == {"original", "Deepfakes"}
    assert (m.status == "ok").all()
    assert m.set_index("key").loc["Deepfakes/000_001", "mask_path"] == "manipulated_sequences/Deepfakes/masks/videos/000_001.mp4"
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
    lines = []
    m = build(tree, log=lines.append).set_index("key")
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
    cfg = {"source": "local", "local": {"root": str(tree)}, "dataset": {"methods": ["Deepfakes"], "compression": "c23"},
           "splits": {"dir": None}}
    info = sources.prepare(cfg, tmp_path / "out")
    assert info.dataset_root == tree and info.splits_dir == tree / "splits"
    assert not (tmp_path / "out").exists(), "a local source copies nothing"
