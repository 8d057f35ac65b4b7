"""Faults of a workflow run itself, on the tiny workflow of tests/test_workflow.py: kill -9 of Snakemake alone and
of its whole process group (during faces and during training), a read-only and a full output disk, and two runs
at once in one working directory."""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_workflow import Project, code_env, copy_code, planned, snakemake_command, tiny_config

pytestmark = pytest.mark.slow

MODEL = "data/models/meso4/q77-all"
TRAIN = {
    "detectors": [{"name": "meso4", "model": "meso4", "pretrained": "none", "input_size": 64}],
    "train": {"qualities": [77], "epochs": 2, "max_steps_per_epoch": 8, "batch_size": 8, "checkpoint_every": 1},
}
LOCKED = "Directory cannot be locked"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, ffpp_tree) -> Project:
    """An uninterrupted run: the data path and one trained model (its code a private copy of src/)."""
    proj = Project(
        tmp_path_factory.mktemp("reference"),
        {**tiny_config(ffpp_tree), **TRAIN},
        copy_code(tmp_path_factory.mktemp("repo")),
    )
    proj.run(None, "data", f"{MODEL}/best.pt")
    return proj


def copy_of(reference: Project, dest: Path, only: tuple[str, ...] | None = None) -> Project:
    """A working directory holding the reference's outputs (all, or `only` these) with their run records."""
    if only is None:
        shutil.copytree(reference.work, dest, symlinks=True, dirs_exist_ok=True)
    else:
        for rel in (*only, ".snakemake/metadata"):
            src, out = reference.work / rel, dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(src, out) if src.is_dir() else shutil.copy2(src, out)
    return Project(dest, reference.config, reference.code)


def start(proj: Project, *args: str) -> subprocess.Popen:
    """Snakemake in the background, in a process group of its own (so that its jobs can be killed with it)."""
    log = (proj.work / "terminal.txt").open("w")
    return subprocess.Popen(
        snakemake_command(proj.work, proj.config, *args),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=code_env(proj.code),
        start_new_session=True,
    )


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 600) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def kill(proc: subprocess.Popen, whole_group: bool) -> None:
    """kill -9 of Snakemake alone (its jobs live on as orphans) or of its whole process group; returns once
    every process of the group is gone."""
    if whole_group:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    wait_for(lambda: not group_alive(proc.pid), "the killed run's jobs to end", timeout=120)


def rerun_after_kill(proj: Project, *targets: str) -> dict[str, int]:
    """A killed Snakemake leaves its lock: the rerun says so and names --unlock; after it, the rerun completes.
    Returns what the rerun planned."""
    refused = proj.run(None, *targets, check=False)
    assert refused.returncode != 0 and LOCKED in refused.stderr and "--unlock" in refused.stderr
    proj.run(None, "--unlock")
    plan = planned(proj.run(None, "-n", *targets))
    proj.run(None, *targets)
    return plan


def recorded(proj: Project, rel: str) -> bool:
    """Whether Snakemake holds a finished run record (metadata, no incomplete marker) for this output."""
    name = base64.urlsafe_b64encode(rel.encode()).decode()
    dot = proj.work / ".snakemake"
    return (dot / "metadata" / name).exists() and not (dot / "incomplete" / name).exists()


def unrecorded(proj: Project, folder: str) -> list[str]:
    """Files under `folder` without a Snakemake run record, relative to the working directory."""
    files = [p.relative_to(proj.work).as_posix() for p in (proj.work / folder).rglob("*.parquet")]
    return [f for f in files if not recorded(proj, f)]


def tensors(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in tensors(val, f"{prefix}/{key}").items()}
    return {}


def assert_same_weights(a: Path, b: Path) -> None:
    ta, tb = tensors(torch.load(a, weights_only=True)), tensors(torch.load(b, weights_only=True))
    assert ta.keys() == tb.keys() and ta
    assert all(torch.equal(ta[k], tb[k]) for k in ta), [k for k in ta if not torch.equal(ta[k], tb[k])]


def kill_during_faces(reference: Project, work: Path, whole_group: bool) -> None:
    proj = copy_of(reference, work, only=("data/source.json", "data/manifest.parquet"))
    proc = start(proj, "data")
    wait_for(lambda: any((proj.work / "data/logs/faces").rglob("*.log")), "a faces job to start")
    time.sleep(1)  # into the job's work
    kill(proc, whole_group)
    # A batch that finished before the kill (a fast machine gets there within the second) keeps its record and is
    # not redone; every other one is. Orphaned jobs stop with their Snakemake (dfpipe.runlog); an output that still
    # got written without a run record is removed by the next run before it plans (dfpipe.interrupted).
    batches = sorted(
        p.relative_to(reference.work).as_posix() for p in (reference.work / "data/faces").rglob("*.parquet")
    )
    finished = [b for b in batches if (proj.work / b).exists() and recorded(proj, b)]
    assert len(batches) == 4 and len(finished) < 4, finished
    assert rerun_after_kill(proj, "data")["faces"] == 4 - len(finished)
    assert unrecorded(proj, "data") == []
    pd.testing.assert_frame_equal(
        pd.read_csv(proj.work / "results/faces/summary.csv"), pd.read_csv(reference.work / "results/faces/summary.csv")
    )
    # Every batch has its recorded params, so a parameter change reaches them all.
    changed = {**proj.config, "faces": {**proj.config["faces"], "margin": 1.5}}
    assert planned(Project(proj.work, changed, proj.code).run(None, "-n", "data"))["faces"] == 4


def test_kill_snakemake_alone_during_faces(reference, tmp_path):
    """kill -9 of Snakemake alone during faces: orphaned jobs leave no unrecorded output; rerun redoes every unfinished batch."""
    kill_during_faces(reference, tmp_path, whole_group=False)


def test_kill_process_group_during_faces(reference, tmp_path):
    """kill -9 of the whole process group during faces: rerun (after --unlock) gives the uninterrupted summary."""
    kill_during_faces(reference, tmp_path, whole_group=True)


def kill_during_training(reference: Project, work: Path, whole_group: bool) -> None:
    proj = copy_of(reference, work)
    shutil.rmtree(proj.work / MODEL)
    proc = start(proj, f"{MODEL}/best.pt")
    wait_for(lambda: (proj.work / MODEL / "last.pt").exists(), "the first training checkpoint")
    kill(proc, whole_group)
    assert rerun_after_kill(proj, f"{MODEL}/best.pt") == {"train": 1}
    assert "resuming at epoch" in (proj.work / "data/logs/train/meso4/q77-all.log").read_text()
    assert_same_weights(proj.work / MODEL / "best.pt", reference.work / MODEL / "best.pt")
    assert planned(proj.run(None, "-n", "data", f"{MODEL}/best.pt")) == {}


def test_kill_snakemake_alone_during_training(reference, tmp_path):
    """kill -9 of Snakemake alone during training: rerun resumes from last.pt; best.pt equals an uninterrupted run."""
    kill_during_training(reference, tmp_path, whole_group=False)


def test_kill_process_group_during_training(reference, tmp_path):
    """kill -9 of the whole process group during training: rerun resumes; best.pt equals an uninterrupted run."""
    kill_during_training(reference, tmp_path, whole_group=True)


def mount(*args: str) -> None:
    proc = subprocess.run(["mount", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount here (needs root or CAP_SYS_ADMIN): {proc.stderr.strip()}")


def snapshot(proj: Project, folder: str) -> dict[str, bytes]:
    return {p.relative_to(proj.work).as_posix(): p.read_bytes() for p in (proj.work / folder).rglob("*") if p.is_file()}


def test_read_only_output_disk(reference, tmp_path):
    """Read-only output disk: Snakemake refuses before any job, naming the write-protected outputs; rerun completes."""
    proj = copy_of(reference, tmp_path)
    quality = proj.work / "data/quality"
    before = snapshot(proj, "data/faces") | snapshot(proj, "data/quality")
    mount("--bind", str(quality), str(quality))
    try:
        mount("-o", "remount,ro,bind", str(quality))
        changed = Project(proj.work, {**proj.config, "fidelity": {"frames_per_video": 2}}, proj.code)
        proc = changed.run(None, "data", check=False)
    finally:
        subprocess.run(["umount", str(quality)], check=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Write-protected output files for rule quality" in out, out[-3000:]
    # Snakemake names the write-protected files of the first quality job it checks, in an order it does not fix
    assert re.search(r"affected files:\s+data/fidelity/q(77|10)/(original|Deepfakes)\.parquet", out), out[-3000:]
    assert snapshot(proj, "data/faces") | snapshot(proj, "data/quality") == before
    changed.run(None, "data")
    assert planned(changed.run(None, "-n", "data")) == {}


def test_full_output_disk(reference, tmp_path):
    """Full output disk: the job fails with 'No space left on device'; no partial file, old outputs intact."""
    proj = copy_of(reference, tmp_path)
    new = proj.work / "data/compress/q50"  # where a new quality's files go, on a disk that is full
    new.mkdir()
    mount("-t", "tmpfs", "-o", "size=256k", "tmpfs", str(new))
    try:
        before = snapshot(proj, "data")
        filler = new / "filler"
        with filler.open("wb", buffering=0) as f, pytest.raises(OSError):  # fill the disk to the last byte
            while True:
                f.write(b"\0" * 4096)
        changed = Project(proj.work, {**proj.config, "compress": {"qualities": [77, 10, 50]}}, proj.code)
        proc = changed.run(None, "data", check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and "No space left on device" in out, out[-3000:]
        assert [p.name for p in new.rglob("*") if p.is_file()] == ["filler"]  # nothing half-written
        filler.unlink()  # the fault removed
        after = snapshot(proj, "data")
        assert {k: v for k, v in after.items() if "/logs/" not in k} == {
            k: v for k, v in before.items() if "/logs/" not in k and k != "data/compress/q50/filler"
        }
        changed.run(None, "data")
        assert planned(changed.run(None, "-n", "data")) == {}
        assert len(list(new.rglob("*.parquet"))) == 4
    finally:
        subprocess.run(["umount", str(new)], check=True)


def test_two_runs_at_once(reference, tmp_path):
    """Two Snakemake runs at once in one folder: the second refuses with the lock message; the first completes."""
    proj = copy_of(reference, tmp_path)
    # A new face margin reruns faces and everything below: the first run holds the lock for a minute or more, not
    # the few seconds a quality-only change took (on a busy machine the second run then came too late).
    changed = Project(proj.work, {**proj.config, "faces": {**proj.config.get("faces", {}), "margin": 1.4}}, proj.code)
    first = start(changed, "data")
    wait_for(lambda: any((proj.work / ".snakemake/locks").glob("*.lock")), "the first run to take the lock")
    second = changed.run(None, "data", check=False)
    assert first.poll() is None, "the first run ended before the second one started: nothing was tested"
    assert second.returncode != 0 and LOCKED in second.stderr, second.stderr[-2000:]
    assert first.wait(timeout=600) == 0, (proj.work / "terminal.txt").read_text()[-3000:]
    assert planned(changed.run(None, "-n", "data")) == {}
    assert unrecorded(proj, "data") == []
