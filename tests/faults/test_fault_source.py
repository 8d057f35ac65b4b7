"""Fault cases of the video sources: a lying or failing download server, unsafe names in its file list, and
bad split files read through the local source of a tiny FF++ tree."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from logcapture import dfpipe_lines
from test_source_ffpp import (  # noqa: F401  (fixtures: the loopback mirror of real mp4 files)
    ORIG,
    PAIRS,
    assert_same,
    clips,
    mirror,
    run,
    video_requests,
)

from dfpipe.data import sources
from dfpipe.data.sources import ffpp

ALL = [ORIG.format(i) for i in ("000", "001", "002", "003")]


def _fetch_with(mirror, tmp_path, fault: str) -> tuple[list[Path], list[str], str]:
    rel = ORIG.format("001")
    mirror.faults[mirror.path(rel)] = [fault]
    got, lines = run(mirror, tmp_path / "ffpp", methods=[])
    return got, lines, rel


def test_short_content_length(mirror, tmp_path):
    """Download server announces half the file: ffprobe finds frames missing, the rest is fetched."""
    got, lines, rel = _fetch_with(mirror, tmp_path, "short")
    assert [p.as_posix() for p in got] == ALL
    assert_same(mirror, tmp_path / "ffpp", got)
    assert any("001.mp4" in line and "fail verification (ffprobe:" in line for line in lines)


def test_long_content_length(mirror, tmp_path):
    """Download server announces 1000 bytes more than it has: the file ends complete once the server says 416."""
    got, lines, rel = _fetch_with(mirror, tmp_path, "long")
    assert_same(mirror, tmp_path / "ffpp", got)
    assert [s for p, s in mirror.statuses if p == mirror.path(rel)] == [200, 416]


def test_dropped_connection(mirror, tmp_path):
    """Download connection drops halfway: the file resumes at the cut (HTTP Range), nothing is refetched."""
    got, lines, rel = _fetch_with(mirror, tmp_path, "drop")
    assert_same(mirror, tmp_path / "ffpp", got)
    size = mirror.file(rel).stat().st_size
    assert [r[1] for r in mirror.requests if r[0] == mirror.path(rel)] == [None, f"bytes={size // 2}-"]


def test_hang_mid_body(mirror, tmp_path):
    """Download server stops sending mid-file: the read times out (ffpp.timeout_s) and the file resumes."""
    got, lines, rel = _fetch_with(mirror, tmp_path, "hang")
    assert_same(mirror, tmp_path / "ffpp", got)
    assert any("001.mp4" in line and "timed out" in line.lower() and "retrying" in line for line in lines)


def test_404(mirror, tmp_path):
    """Download server lacks one video (404): it is named with its URL, the others complete, a rerun fetches it."""
    rel = ORIG.format("002")
    kept = mirror.file(rel).read_bytes()
    mirror.file(rel).unlink()
    with pytest.raises(ffpp.DownloadError) as info:
        run(mirror, tmp_path / "ffpp", methods=[])
    assert f"{rel}: HTTP 404 Not Found ({mirror.url}/v3/{rel})" in str(info.value)
    assert_same(mirror, tmp_path / "ffpp", [r for r in ALL if r != rel])
    mirror.file(rel).write_bytes(kept)
    before = len(mirror.requests)
    got, _ = run(mirror, tmp_path / "ffpp", methods=[])
    assert mirror.requests[before:] == [(mirror.path(rel), None)]
    assert_same(mirror, tmp_path / "ffpp", got)


def test_500(mirror, tmp_path):
    """Download server fails with 5xx until retries are spent: stops naming the file and ffpp.server; rerun resumes."""
    rel = ORIG.format("002")
    mirror.faults[mirror.path(rel)] = ["503"] * 3
    with pytest.raises(ffpp.DownloadError) as info:
        run(mirror, tmp_path / "ffpp", methods=[], retries=2)
    msg = str(info.value)
    assert rel in msg and "giving up after 3 attempts (HTTP 503" in msg and "ffpp.server" in msg
    assert_same(mirror, tmp_path / "ffpp", ALL[:2])
    got, _ = run(mirror, tmp_path / "ffpp", methods=[])
    assert [p.as_posix() for p in got] == ALL
    assert_same(mirror, tmp_path / "ffpp", got)


def _unsafe_name(mirror, tmp_path, bad: str) -> None:
    (mirror.root / "misc/filelist.json").write_text(json.dumps([["000", "001"], ["002", bad]]))
    with pytest.raises(ValueError) as info:
        run(mirror, tmp_path / "ffpp", methods=[])
    assert "filelist.json: entry 1" in str(info.value) and repr(bad) in str(info.value)
    assert video_requests(mirror) == [] and not list((tmp_path / "ffpp").rglob("*.mp4"))
    assert not (tmp_path / "ffpp" / ffpp.FILELIST).exists()
    (mirror.root / "misc/filelist.json").write_text(json.dumps(PAIRS))  # once the server's list is fixed
    got, _ = run(mirror, tmp_path / "ffpp", methods=[])
    assert [p.as_posix() for p in got] == ALL


def test_dotdot_name_in_the_file_list(mirror, tmp_path):
    """Download file list holds `../000`: refused naming the entry, nothing fetched; a fixed list completes."""
    _unsafe_name(mirror, tmp_path, "../000")


def test_absolute_name_in_the_file_list(mirror, tmp_path):
    """Download file list holds `/etc/passwd`: refused naming the entry, nothing fetched; a fixed list completes."""
    _unsafe_name(mirror, tmp_path, "/etc/passwd")


def test_nul_in_a_name_of_the_file_list(mirror, tmp_path):
    """Download file list holds a name with NUL: refused naming the entry, nothing fetched; a fixed list completes."""
    _unsafe_name(mirror, tmp_path, "00\x001")


# ---- split files, through the local source of a tiny FF++ tree -----------------------------------------------

GOOD = {"train": [["000", "001"]], "val": [["002", "003"]], "test": [["004", "005"]]}


def _prepare(tree: Path, splits: Path, out: Path):
    cfg = {
        "source": "local",
        "local": {"root": str(tree)},
        "splits": {"dir": str(splits)},
        "dataset": {"methods": ["Deepfakes"], "compression": "c23"},
    }
    with dfpipe_lines() as lines:
        return sources.prepare(cfg, out), lines


def _splits(folder: Path, content: dict) -> Path:
    folder.mkdir(exist_ok=True)
    for split, value in content.items():
        (folder / f"{split}.json").write_text(value if isinstance(value, str) else json.dumps(value))
    return folder


def _fixed_rerun_works(ffpp_tree, splits: Path, tmp_path) -> None:
    _splits(splits, GOOD)
    info, lines = _prepare(ffpp_tree, splits, tmp_path / "out")
    assert info.splits_dir == splits and lines == []


def _bad_splits(ffpp_tree, tmp_path, content: dict, *words: str) -> None:
    splits = _splits(tmp_path / "splits", content)
    with pytest.raises(ValueError) as info:
        _prepare(ffpp_tree, splits, tmp_path / "out")
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert not (tmp_path / "out").exists()  # nothing written before the check
    _fixed_rerun_works(ffpp_tree, splits, tmp_path)


def test_identity_in_two_splits(ffpp_tree, tmp_path):
    """Split files hold an identity in train and test: refused naming the file, the id and the fix."""
    _bad_splits(
        ffpp_tree,
        tmp_path,
        {**GOOD, "test": [["004", "005"], ["001", "006"]]},
        "test.json",
        "identity 001 is also in the train split",
        "remove it from one",
    )


def test_malformed_split_json(ffpp_tree, tmp_path):
    """Split file is malformed JSON: refused naming the file and where FF++'s own splits are."""
    _bad_splits(ffpp_tree, tmp_path, {**GOOD, "val": '[["002", "003"'}, "val.json", "not valid JSON", "dataset/splits")


def test_traversal_id_in_the_splits(ffpp_tree, tmp_path):
    """Split file holds a traversal id `../../etc/passwd`: refused naming the file and the entry."""
    _bad_splits(ffpp_tree, tmp_path, {**GOOD, "val": [["002", "../../etc/passwd"]]}, "val.json", "entry 0", "unsafe id")


def test_split_entry_that_is_no_pair(ffpp_tree, tmp_path):
    """Split file holds a three-id entry: refused naming the file and the entry."""
    _bad_splits(
        ffpp_tree, tmp_path, {**GOOD, "train": [["000", "001", "002"]]}, "train.json", "entry 0", "pair of id strings"
    )


def test_splits_of_another_dataset(ffpp_tree, tmp_path):
    """Split files name none of the tree's videos: refused (every video would leave the shards), naming splits.dir."""
    _bad_splits(
        ffpp_tree,
        tmp_path,
        {"train": [["100", "101"]], "val": [["102", "103"]], "test": [["104", "105"]]},
        "name none of the 6 original videos",
        "splits.dir",
    )


def test_unknown_ids_in_the_splits(ffpp_tree, tmp_path):
    """Split files list ids with no video in the tree: logged by name (a partial dataset), the run goes on."""
    splits = _splits(tmp_path / "splits", {**GOOD, "test": [["004", "005"], ["900", "901"]]})
    info, lines = _prepare(ffpp_tree, splits, tmp_path / "out")
    assert info.dataset_root == ffpp_tree
    assert lines == [f"splits: 2 ids in {splits} have no original video in the dataset (ignored): 900, 901"]


def test_split_folder_missing_a_file(ffpp_tree, tmp_path):
    """Split folder lacks test.json: the source names the file and where FF++'s splits are."""
    splits = _splits(tmp_path / "splits", {"train": GOOD["train"], "val": GOOD["val"]})
    with pytest.raises(FileNotFoundError, match=r"test.json: split file missing.*dataset/splits"):
        _prepare(ffpp_tree, splits, tmp_path / "out")
    shutil.rmtree(splits)
    _fixed_rerun_works(ffpp_tree, splits, tmp_path)
