"""The Snakemake DAG end to end on a tiny local FF++ tree: outputs, no-op rerun, and what a change reruns."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def snakemake(workdir: Path, config: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cfg = workdir / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
         "--configfile", str(cfg), "--cores", "2", *args],
        capture_output=True, text=True,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def planned(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Job counts per rule from a dry run's 'Job stats' table (empty when nothing is to be done)."""
    text = proc.stdout + proc.stderr
    if "Job stats:" not in text:
        return {}
    table = text.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


@pytest.fixture(scope="module")
def project(tmp_path_factory, ffpp_tree):
    work = tmp_path_factory.mktemp("work")
    config = {
        "source": "local",
        "local": {"root": str(ffpp_tree)},
        "dataset": {"methods": ["Deepfakes"], "compression": "c23"},
        "frames": {"per_video": 4, "per_method": {}},
        "faces": {"size": 128, "min_faces_per_video": 3},
        "jpeg": {"qualities": [77, 10]},
        "shards": {"per_split": {"train": 2, "val": 1, "test": 1}},
        "batching": {"videos_per_job": 4},
    }
    snakemake(work, config, "data")
    return work, config


def test_outputs_of_a_full_run(project):
    work, config = project
    m = pd.read_parquet(work / "data/manifest.parquet")
    assert len(m) == 12
    src = json.loads((work / "data/source.json").read_text())
    assert not Path(src["dataset_root"]).is_absolute()
    summary = pd.read_csv(work / "results/faces/summary.csv")
    assert len(summary) == 12 and (summary.planned == 4).all()
    assert (summary.ok >= 3).all(), summary
    report = pd.read_csv(work / "results/quality/psnr_ssim.csv")
    assert set(report.quality) == {77, 10}
    for q in (77, 10):
        index = json.loads((work / f"data/shards/q{q}/index.json").read_text())
        assert index, index
        tars = sorted((work / f"data/shards/q{q}").glob("*.tar"))
        assert [t.name for t in tars] == ["test-0000.tar", "train-0000.tar", "train-0001.tar", "val-0000.tar"]
        n_samples = sum(1 for t in tars for name in tarfile.open(t).getnames() if name.endswith(".jpg"))
        assert n_samples == int(summary.ok.sum())


def test_rerun_is_a_no_op(project):
    work, config = project
    proc = snakemake(work, config, "-n", "data")
    assert planned(proc) == {}, proc.stdout[-2000:]


def test_changing_the_face_margin_reruns_faces_and_below_only(project):
    work, config = project
    changed = {**config, "faces": {**config["faces"], "margin": 1.5}}
    jobs = planned(snakemake(work, changed, "-n", "data"))
    assert "source" not in jobs and "manifest" not in jobs
    assert jobs["faces"] == 4 and jobs["compress"] == 8 and jobs["quality"] == 4  # quality: method × quality
    assert jobs["shards_train"] == 2 and jobs["face_summary"] == 1


def test_adding_a_quality_runs_only_that_quality(project):
    work, config = project
    changed = {**config, "jpeg": {"qualities": [77, 10, 50]}}
    jobs = planned(snakemake(work, changed, "-n", "data"))
    assert "faces" not in jobs
    assert jobs["compress"] == 4 and jobs["quality"] == 2  # four batches, two methods, at q50 only
    assert jobs["shards_train"] == 1 and jobs["shard_index"] == 1 and jobs["quality_report"] == 1


def test_more_frames_for_one_method_reruns_only_its_batches(project):
    work, config = project
    changed = {**config, "frames": {"per_video": 4, "per_method": {"Deepfakes": 6}}}
    jobs = planned(snakemake(work, changed, "-n", "data"))
    assert jobs["faces"] == 2, jobs  # the two Deepfakes batches, not the originals
    assert jobs["compress"] == 4 and jobs["quality"] == 2  # Deepfakes at both qualities


def test_a_smaller_quality_sample_reruns_only_the_quality_jobs(project):
    work, config = project
    changed = {**config, "quality": {"frames_per_video": 2}}
    jobs = planned(snakemake(work, changed, "-n", "data"))
    assert jobs == {"quality": 4, "quality_report": 1, "data": 1}, jobs  # quality: method × quality
    log = (work / "data/logs/quality/q77/Deepfakes.log").read_text()
    assert "crops measured (at most 8 frames per video)" in log


def test_key_order_in_the_config_changes_nothing(project):
    work, config = project
    reordered = {k: (dict(reversed(list(v.items()))) if isinstance(v, dict) else v) for k, v in reversed(config.items())}
    assert planned(snakemake(work, reordered, "-n", "data")) == {}


def test_training_evaluation_and_tables_end_to_end(project):
    work, config = project
    full = {**config,
            "detectors": [{"name": "meso4", "model": "meso4", "pretrained": "none", "input_size": 64}],
            "train": {"qualities": [77], "epochs": 1, "max_steps_per_epoch": 2, "batch_size": 8,
                      "checkpoint_every": 1, "generalization": {"detectors": ["meso4"]}},
            "evaluate": {"bootstrap": 10}}
    snakemake(work, full)
    auc = pd.read_csv(work / "results/auc_table.csv")
    assert {"q77/FF-DF", "q77/Avg", "q10/FF-DF"} <= set(auc.columns)
    assert (auc.detector == "meso4").all() and set(auc.level) == {"frame", "video"}
    provenance = json.loads((work / "results/auc_table.csv.provenance.json").read_text())["provenance"]
    assert provenance["cjpeg_version"].startswith("mozjpeg version") and provenance["manifest_sha256"]
    gen = pd.read_csv(work / "results/generalization_matrix.csv")
    assert len(gen) > 0
    for plot in ("auc_vs_quality", "roc", "tsne"):
        assert (work / f"results/plots/{plot}.png").stat().st_size > 1000
    assert (work / "data/models/meso4/q77-all/last.pt").is_file()
    assert planned(snakemake(work, full, "-n")) == {}


def test_invalid_config_stops_with_the_key_and_allowed_values(project, tmp_path):
    work, config = project
    proc = snakemake(tmp_path, {**config, "dataset": {"methods": ["Deepfakes"], "compression": "c99"}}, "-n", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "dataset.compression" in out and "'c99'" in out and "'c23'" in out
