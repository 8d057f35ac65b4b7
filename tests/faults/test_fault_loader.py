"""Faults in the shards as the readers (training and prediction) see them: cuts, foreign members, bad bytes.

Each case damages a real shard written by the shards stage, checks that reading stops with the shard's name
and how to rebuild it, that nothing was written meanwhile, and that the rebuilt shard reads as before."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from test_loader import make_shards, videos
from test_train import SETTINGS, fresh

from dfpipe.evaluation.predict import predict
from dfpipe.models.train import train

REBUILD = r"delete it and rerun snakemake \(or `snakemake --forcerun shards_{split}`\)"


def build(root: Path) -> tuple[list[Path], list[Path]]:
    return (
        make_shards(root, "train", videos(3, 3)),
        make_shards(root, "val", videos(2, 2, offset=100), frames=2, n_shards=1, first=100),
    )


def members(shard: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(shard) as tar:
        return list(tar)


def block_end(m: tarfile.TarInfo) -> int:
    """Where the member's data ends, padded to the tar block."""
    return m.offset_data + -(-m.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def scores(val: list[Path]) -> pd.DataFrame:
    return predict(fresh(), val, device="cpu", batch_size=3)


def check_refused(
    root: Path,
    shards: tuple[list[Path], list[Path]],
    damaged: Path,
    message: str,
    baseline: pd.DataFrame,
    at_start: bool = True,
) -> None:
    """Training and prediction both stop naming the shard; no best.pt appears (nor anything else when the
    fault shows in the shard's layout, checked before the first step); a rebuild reads as before."""
    out = root / "model"
    with pytest.raises(Exception, match=message):
        train(fresh(), *shards, out, SETTINGS, device="cpu")
    assert not (out / "best.pt").exists()
    assert not at_start or not (out / "last.pt").exists()
    with pytest.raises(Exception, match=message):
        scores([damaged] if "val" in damaged.name else shards[1] + [damaged])
    rebuilt = build(root)  # what rerunning the shards rule does: the same bytes as before the fault
    pd.testing.assert_frame_equal(scores(rebuilt[1]), baseline)
    assert train(fresh(), *rebuilt, out, SETTINGS, device="cpu").is_file()


@pytest.fixture
def data(tmp_path) -> tuple[Path, tuple[list[Path], list[Path]], pd.DataFrame]:
    shards = build(tmp_path)
    return tmp_path, shards, scores(shards[1])


def test_shard_cut_mid_sample(data) -> None:
    """Truncated shard cut inside a sample's JPEG: readers stop naming the shard and how to rebuild it."""
    root, shards, baseline = data
    shard = shards[1][0]
    jpg = [m for m in members(shard) if m.name.endswith(".jpg")][3]
    shard.write_bytes(shard.read_bytes()[: jpg.offset_data + jpg.size // 2])
    check_refused(
        root,
        shards,
        shard,
        rf"val-0000.tar: truncated: member {jpg.name} ends at .*" + REBUILD.format(split="val"),
        baseline,
    )


def test_shard_cut_at_a_sample_boundary(data) -> None:
    """Truncated shard cut exactly at a sample boundary: read as a cut, not as a clean end (names the shard)."""
    root, shards, baseline = data
    shard = shards[1][0]
    last_of_second = [m for m in members(shard) if m.name.endswith(".json")][1]
    shard.write_bytes(shard.read_bytes()[: block_end(last_of_second)])
    check_refused(
        root,
        shards,
        shard,
        r"val-0000.tar: truncated: no end-of-archive block .*" + REBUILD.format(split="val"),
        baseline,
    )


def test_shard_rewritten_with_fewer_samples(data) -> None:
    """Shard replaced by a well-formed tar holding fewer samples: its count against {split}.counts.json fails."""
    root, shards, baseline = data
    shard = shards[0][1]
    with tarfile.open(shard) as tar:
        kept = [(m, tar.extractfile(m).read()) for m in tar][:-3]  # the last sample's three members dropped
    with tarfile.open(shard, "w") as tar:
        for m, payload in kept:
            tar.addfile(m, io.BytesIO(payload))
    n = len(kept) // 3
    check_refused(
        root,
        shards,
        shard,
        rf"train-0001.tar: holds {n} samples, but the shards stage wrote {n + 1} "
        rf"\(train.counts.json\).*" + REBUILD.format(split="train"),
        baseline,
    )


def test_tar_traversal_member(data) -> None:
    """Tar member named ../x in a shard: refused as path traversal naming the shard; nothing lands outside."""
    root, shards, baseline = data
    shard = shards[1][0]
    with tarfile.open(shard) as tar:
        kept = [(m, tar.extractfile(m).read()) for m in tar]
    evil = tarfile.TarInfo("../escaped.jpg")
    evil.size = 3
    with tarfile.open(shard, "w") as tar:
        for m, payload in kept:
            tar.addfile(m, io.BytesIO(payload))
        tar.addfile(evil, io.BytesIO(b"abc"))
    check_refused(
        root,
        shards,
        shard,
        r"val-0000.tar: member '../escaped.jpg' is a path, not a sample file "
        r"\(path traversal\).*" + REBUILD.format(split="val"),
        baseline,
    )
    assert not (shard.parent.parent / "escaped.jpg").exists()


def test_corrupt_jpeg_in_a_shard(data) -> None:
    """Corrupt JPEG bytes inside a shard (tar intact): readers stop naming the shard, the sample and the fix."""
    root, shards, baseline = data
    shard = shards[1][0]
    jpg = [m for m in members(shard) if m.name.endswith(".jpg")][2]
    raw = bytearray(shard.read_bytes())
    raw[jpg.offset_data : jpg.offset_data + jpg.size] = b"\x00" * jpg.size
    shard.write_bytes(bytes(raw))
    key = jpg.name.split(".")[0]
    # bytes are only seen when decoded: training gets as far as validating (its resume point stays valid)
    check_refused(
        root,
        shards,
        shard,
        rf"val-0000.tar: sample {key} is not a readable image .*" + REBUILD.format(split="val"),
        baseline,
        at_start=False,
    )
