"""The Snakemake DAG end to end on a tiny local FF++ tree: outputs, no-op rerun, and what a change reruns."""

from __future__ import annotations

import ast
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def tiny_config(ffpp_tree: Path) -> dict:
    """Six originals and six Deepfakes (two batches of four videos per method), four frames each, two qualities."""
    return {
        "source": "local",
        "local": {"root": str(ffpp_tree)},
        "dataset": {"methods": ["Deepfakes"], "compression": "c23"},
        "frames": {"per_video": 4, "per_method": {}},
        "faces": {"size": 128, "min_faces_per_video": 3},
        "compress": {"qualities": [77, 10]},
        "shards": {"per_split": {"train": 2, "val": 1, "test": 1}},
        "batching": {"videos_per_job": 4},
    }


def snakemake_command(workdir: Path, config: dict, *args: str) -> list[str]:
    """The command line of a run in `workdir` with `config` (written to workdir/config.yaml)."""
    cfg = workdir / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(cfg),
        "--cores",
        "2",
        # the workflow profile's 5-s rate-limit timespan (profiles/default) costs up to 5 s at exit: minutes over
        # the suite's many seconds-long runs, which have no scheduler load to save
        "--max-jobs-per-timespan",
        "100/1s",
        *args,
    ]


def code_env(code: Path | None) -> dict | None:
    """Environment in which Snakemake and its jobs import dfpipe from `code` (a copy of src/) instead."""
    return None if code is None else {**os.environ, "PYTHONPATH": str(code)}


def snakemake(
    workdir: Path, config: dict, *args: str, check: bool = True, code: Path | None = None
) -> subprocess.CompletedProcess:
    proc = subprocess.run(snakemake_command(workdir, config, *args), capture_output=True, text=True, env=code_env(code))
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


@dataclass
class Project:
    """A working directory of the tiny workflow; `code`: a private copy of src/ its runs import dfpipe from."""

    work: Path
    config: dict
    code: Path | None = None
    first_run: str = ""  # the terminal output of the run that built it

    def run(self, config: dict | None = None, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return snakemake(self.work, config or self.config, *args, check=check, code=self.code)


def copy_code(dest: Path) -> Path:
    """A copy of src/dfpipe in a stand-in of the repository (its other entries linked), so a test can edit the
    pipeline's code without touching the repository. Returns the folder to put on PYTHONPATH."""
    for entry in REPO.iterdir():
        if entry.name != "src":
            (dest / entry.name).symlink_to(entry)
    shutil.copytree(REPO / "src" / "dfpipe", dest / "src" / "dfpipe", ignore=shutil.ignore_patterns("__pycache__"))
    return dest / "src"


@pytest.fixture(scope="module")
def project(tmp_path_factory, ffpp_tree) -> Project:
    proj = Project(tmp_path_factory.mktemp("work"), tiny_config(ffpp_tree), copy_code(tmp_path_factory.mktemp("repo")))
    proc = proj.run(None, "data")
    proj.first_run = proc.stdout + proc.stderr
    return proj


def test_outputs_of_a_full_run(project):
    work = project.work
    m = pd.read_parquet(work / "data/manifest.parquet")
    assert len(m) == 12
    src = json.loads((work / "data/source.json").read_text())
    assert not Path(src["dataset_root"]).is_absolute()
    summary = pd.read_csv(work / "results/faces/summary.csv")
    assert len(summary) == 12 and (summary.planned == 4).all()
    assert (summary.ok >= 3).all(), summary
    report = pd.read_csv(work / "results/fidelity/psnr_ssim.csv")
    assert set(report.quality) == {77, 10}
    for q in (77, 10):
        index = json.loads((work / f"data/shards/q{q}/index.json").read_text())
        assert index, index
        tars = sorted((work / f"data/shards/q{q}").glob("*.tar"))
        assert [t.name for t in tars] == ["test-0000.tar", "train-0000.tar", "train-0001.tar", "val-0000.tar"]
        n_samples = sum(1 for t in tars for name in tarfile.open(t).getnames() if name.endswith(".jpg"))
        assert n_samples == int(summary.ok.sum())
    # The terminal shows progress and errors; script rules have no shell command to print.
    assert "Faces" in project.first_run or "faces" in project.first_run
    assert "Shell command" not in project.first_run


def test_rerun_is_a_no_op(project):
    config = project.config
    proc = project.run(config, "-n", "data")
    assert planned(proc) == {}, proc.stdout[-2000:]


def test_changing_the_face_margin_reruns_faces_and_below_only(project):
    config = project.config
    changed = {**config, "faces": {**config["faces"], "margin": 1.5}}
    jobs = planned(project.run(changed, "-n", "data"))
    assert "source" not in jobs and "manifest" not in jobs
    assert jobs["faces"] == 4 and jobs["compress"] == 8 and jobs["fidelity"] == 4  # fidelity: method × quality
    assert jobs["shards_train"] == 2 and jobs["face_summary"] == 1


def test_adding_a_quality_runs_only_that_quality(project):
    config = project.config
    changed = {**config, "compress": {"qualities": [77, 10, 50]}}
    jobs = planned(project.run(changed, "-n", "data"))
    assert "faces" not in jobs
    assert jobs["compress"] == 4 and jobs["fidelity"] == 2  # four batches, two methods, at q50 only
    assert jobs["shards_train"] == 1 and jobs["shard_index"] == 1 and jobs["fidelity_report"] == 1


def test_more_frames_for_one_method_reruns_only_its_batches(project):
    config = project.config
    changed = {**config, "frames": {"per_video": 4, "per_method": {"Deepfakes": 6}}}
    jobs = planned(project.run(changed, "-n", "data"))
    assert jobs["faces"] == 2, jobs  # the two Deepfakes batches, not the originals
    assert jobs["compress"] == 4 and jobs["fidelity"] == 2  # Deepfakes at both qualities


def test_a_smaller_quality_sample_reruns_only_the_quality_jobs(project):
    work, config = project.work, project.config
    changed = {**config, "fidelity": {"frames_per_video": 2}}
    jobs = planned(project.run(changed, "-n", "data"))
    assert jobs == {"fidelity": 4, "fidelity_report": 1, "data": 1}, jobs  # fidelity: method × quality
    log = (work / "data/logs/fidelity/q77/Deepfakes.log").read_text()
    assert "crops measured (at most 8 frames per video)" in log


def test_key_order_in_the_config_changes_nothing(project):
    config = project.config
    reordered = {
        k: (dict(reversed(list(v.items()))) if isinstance(v, dict) else v) for k, v in reversed(config.items())
    }
    assert planned(project.run(reordered, "-n", "data")) == {}


def edit_function(path: Path) -> str:
    """Add a statement at the top of the first function in `path` (a real code change); return the old text."""
    text = path.read_text()
    first = next(n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef)).body[0]
    lines = text.splitlines(keepends=True)
    lines.insert(first.lineno - 1, " " * first.col_offset + "edited = True\n")
    path.write_text("".join(lines))
    return text


def test_editing_a_stage_module_reruns_that_stage_and_below_only(project):
    faces_py = project.code / "dfpipe" / "data" / "faces.py"
    original = edit_function(faces_py)
    try:
        jobs = planned(project.run(None, "-n", "data"))
    finally:
        faces_py.write_text(original)
    assert "source" not in jobs and "manifest" not in jobs, jobs
    assert jobs["faces"] == 4 and jobs["face_summary"] == 1 and jobs["compress"] == 8, jobs
    shards_py = project.code / "dfpipe" / "data" / "shards.py"
    original = edit_function(shards_py)
    try:
        jobs = planned(project.run(None, "-n", "data"))
    finally:
        shards_py.write_text(original)
    assert jobs == {"shards_train": 2, "shards_val": 2, "shards_test": 2, "shard_index": 2, "data": 1}, jobs
    assert planned(project.run(None, "-n", "data")) == {}  # the hash is of the text: restored, nothing to do


def test_a_change_to_the_source_and_later_stages_is_caught_up_in_one_run(project):
    """layout.py runs in the source, the manifest checkpoint and the faces stage. When the source reruns, the
    checkpoint's and the faces jobs' own code changes must be picked up by the same run, not the next one."""
    layout_py = project.code / "dfpipe" / "data" / "layout.py"
    original = edit_function(layout_py)
    try:
        jobs = planned(project.run(None, "-n", "data"))
        assert jobs["source"] == 1 and jobs["manifest"] == 1, jobs
        project.run(None, "data")
        assert planned(project.run(None, "-n", "data")) == {}
    finally:
        layout_py.write_text(original)
    project.run(None, "data")
    assert planned(project.run(None, "-n", "data")) == {}


def test_an_output_a_killed_snakemake_never_recorded_is_rebuilt(project):
    """A job that finished after its Snakemake was killed leaves its output, the incomplete marker and no
    metadata record. Snakemake's own check misses jobs after the manifest checkpoint, so without the
    workflow's start-up pass such an output was kept, and later parameter changes never reached it (a real
    kill of Snakemake is in tests/faults/test_fault_workflow.py)."""
    work = project.work
    out = "results/faces/summary.csv"
    name = base64.urlsafe_b64encode(out.encode()).decode()
    (work / ".snakemake/metadata" / name).unlink()
    (work / ".snakemake/incomplete" / name).write_text('{"external_jobid": null}')
    proc = project.run(None, "-n", "data")
    assert "Removed 1 outputs of an interrupted run that have no run record" in proc.stderr, proc.stderr[-2000:]
    assert out in proc.stderr and not (work / out).exists()
    assert planned(proc) == {"face_summary": 1, "data": 1}
    project.run(None, "data")
    assert (work / out).is_file() and (work / ".snakemake/metadata" / name).is_file()
    assert planned(project.run(None, "-n", "data")) == {}


def trained_config(config: dict) -> dict:
    """`config` plus one tiny Meso-4, trained at q77 on all methods and on each one (the generalization runs)."""
    return {
        **config,
        "detectors": [{"name": "meso4", "model": "meso4", "pretrained": "none", "input_size": 64}],
        "train": {
            "qualities": [77],
            "epochs": 1,
            "max_steps_per_epoch": 2,
            "batch_size": 8,
            "checkpoint_every": 1,
            "generalization": {"detectors": ["meso4"]},
        },
        "evaluate": {"bootstrap": 10},
    }


def test_training_evaluation_and_tables_end_to_end(project):
    work, config = project.work, project.config
    full = trained_config(config)
    project.run(full)
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
    assert planned(project.run(full, "-n")) == {}


# What `snakemake --report` of the tiny trained run must hold: result file -> its caption (workflow/report/).
REPORTED = {
    "faces/summary.csv": "face_summary.rst",
    "quality/psnr_ssim.csv": "psnr_ssim_table.rst",
    "quality/psnr_ssim.png": "psnr_ssim_plot.rst",
    "auc_table.csv": "auc_table.rst",
    "auc_table.md": "auc_table.rst",
    "metrics.csv": "metrics.rst",
    "robustness_matrix.csv": "robustness.rst",
    "generalization_matrix.csv": "generalization.rst",
    "plots/auc_vs_quality.png": "auc_plot.rst",
    "plots/roc.png": "roc.rst",
    "plots/tsne.png": "tsne.rst",
    "provenance.json": "provenance.rst",
    "report/face_summary.html": "face_summary.rst",
    "report/psnr_ssim.html": "psnr_ssim_table.rst",
    "report/auc_table.html": "auc_table.rst",
    "report/robustness_matrix.html": "robustness.rst",
    "report/generalization_matrix.html": "generalization.rst",
}


def caption_phrase(caption: str) -> str:
    """The caption's first plain words (up to six, before any rst markup or non-ASCII sign the page escapes)."""
    words = []
    for word in (REPO / "workflow/report" / caption).read_text().split()[:6]:
        if "`" in word or not word.isascii():
            break
        words.append(word)
    assert len(words) >= 3, f"{caption}: start the caption with a few plain words"
    return " ".join(words)


def test_every_report_caption_named_in_the_rules_exists():
    named = {
        m
        for smk in (REPO / "workflow/rules").glob("*.smk")
        for m in re.findall(r'caption="\.\./report/([^"]+)"', smk.read_text())
    }
    assert set(REPORTED.values()) <= named
    assert not [c for c in named if not (REPO / "workflow/report" / c).is_file()]


def test_report_holds_every_result_with_its_caption(project):
    work = project.work
    full = trained_config(project.config)
    project.run(full)  # a no-op after the end-to-end test
    project.run(full, "--report", "report.zip")
    with zipfile.ZipFile(work / "report.zip") as zf:
        names = zf.namelist()
        html = zf.read(next(n for n in names if n.endswith("report.html"))).decode()
    stored = {Path(n).name for n in names}  # the zip keeps each result under data/raw/<hash>/<file name>
    for result, caption in REPORTED.items():
        assert Path(result).name in stored, f"{result} not in report.zip: {names}"
        assert caption_phrase(caption) in html, f"caption {caption} of {result} not in the report"
    # Whatever else the run wrote to results/ (Grad-CAM grids, ablation tables, …) is in the report too.
    written = [
        f.relative_to(work / "results").as_posix()
        for f in (work / "results").rglob("*")
        if f.is_file() and not f.name.endswith(".provenance.json")
    ]
    assert [r for r in written if Path(r).name not in stored] == []
    # The workflow page says what was run, from the config itself.
    assert "Deepfake detection under JPEG compression" in html and "77, 10" in html
    # The single-file variant embeds the same results.
    project.run(full, "--report", "report.html")
    single = (work / "report.html").read_text()
    for result, caption in REPORTED.items():
        assert Path(result).name in single and caption_phrase(caption) in single, result


def test_invalid_config_stops_with_the_key_and_allowed_values(project, tmp_path):
    config = project.config
    proc = snakemake(
        tmp_path, {**config, "dataset": {"methods": ["Deepfakes"], "compression": "c99"}}, "-n", check=False
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "dataset.compression" in out and "'c99'" in out and "'c23'" in out
