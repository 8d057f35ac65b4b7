"""Outputs of jobs that started under a Snakemake and never got a run record are removed before planning."""

from __future__ import annotations

import base64

from dfpipe import interrupted


def mark_started(work, path: str) -> None:
    marker = work / ".snakemake" / "incomplete" / base64.urlsafe_b64encode(path.encode()).decode()
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text('{"external_jobid": null}')


def test_unrecorded_outputs_and_leftover_parts_go_recorded_ones_stay(tmp_path):
    for rel in (
        "data/faces/a/b0000.parquet",
        "data/faces/a/b0001.parquet",
        "data/faces/a/.b0002.parquet.x.part",
        "results/summary.csv",
        "elsewhere/keep.txt",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    for rel in ("data/faces/a/b0000.parquet", "results/summary.csv", "elsewhere/keep.txt", "data/gone.parquet"):
        mark_started(tmp_path, rel)
    removed = interrupted.remove_unrecorded(tmp_path, ["data", "results"])
    assert sorted(removed) == [
        "data/faces/a/.b0002.parquet.x.part",
        "data/faces/a/b0000.parquet",
        "results/summary.csv",
    ]
    assert (tmp_path / "data/faces/a/b0001.parquet").exists() and (tmp_path / "elsewhere/keep.txt").exists()
    assert not (tmp_path / "data/faces/a/b0000.parquet").exists()


def test_nothing_is_removed_while_another_run_holds_the_lock(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data/b0000.parquet").write_text("x")
    mark_started(tmp_path, "data/b0000.parquet")
    (tmp_path / ".snakemake/locks").mkdir(parents=True)
    (tmp_path / ".snakemake/locks/0.output.lock").write_text("data/b0000.parquet\n")
    assert interrupted.remove_unrecorded(tmp_path, ["data"]) == []
    assert (tmp_path / "data/b0000.parquet").exists()
