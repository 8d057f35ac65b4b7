"""Every configuration we ship, read the way Snakemake reads it: config.yaml (the Snakefile's `configfile:`), the
file of `--configfile` merged over it by Snakemake's own `update_config`, then `--config` overrides; and the
workflow planning each one's whole grid against a generated FF++-layout tree."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.common.configfile import load_configfile
from snakemake.utils import update_config

from dfpipe import config as dfconfig
from dfpipe.models import experiments

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.name for p in (REPO / "configs").glob("*.yaml"))
# Standalone: a study of its own that sets every section config.yaml fills with demo settings, so nothing of the
# demo reaches it. Overlay: a variant of the demo, meant to inherit what it does not say.
STANDALONE = {"ffpp-paper.yaml"}
OVERLAYS = {"demo-full.yaml"}


def snakemake_reads(configfile: str | None, overrides: dict | None = None) -> dict:
    """The config a run from the repository gets: config.yaml, the --configfile merged over it, --config."""
    config = load_configfile(str(REPO / "config.yaml"))
    if configfile:
        update_config(config, load_configfile(str(REPO / "configs" / configfile)))
    if overrides:
        update_config(config, copy.deepcopy(overrides))
    return config


def local_overrides(tree: Path) -> dict:
    """The --config a user gives to point a config at their FF++ tree (the paper's is /data/FaceForensics++)."""
    return {"source": "local", "local": {"root": str(tree)}}


def place_weights(config: dict, where: Path) -> None:
    """Empty stand-ins for the weights files a config names: validation checks they exist, a dry run no more."""
    for _, name in dfconfig.weight_files(config):
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        (where / name).touch()


def test_every_config_is_standalone_or_an_overlay():
    assert set(CONFIGS) == STANDALONE | OVERLAYS, "classify each new file in configs/ in this test"


@pytest.mark.parametrize("configfile", [None, *CONFIGS])
def test_each_config_validates_as_snakemake_merges_it(configfile, tmp_path, monkeypatch, ffpp_tree):
    raw = snakemake_reads(configfile, local_overrides(ffpp_tree) if configfile in STANDALONE else None)
    monkeypatch.chdir(tmp_path)  # weights paths are read from the working directory, as in a run
    place_weights(raw, tmp_path)
    config = dfconfig.validate(raw, source=configfile or "config.yaml")
    assert experiments.runs(config)


@pytest.mark.parametrize("configfile", sorted(STANDALONE))
def test_nothing_of_the_demo_reaches_a_standalone_config(configfile, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    alone = load_configfile(str(REPO / "configs" / configfile))
    place_weights(alone, tmp_path)
    merged = dfconfig.validate(snakemake_reads(configfile))
    # `--replace-workflow-config` (config.yaml dropped) and the merge must give one and the same run
    assert merged == dfconfig.validate(alone)


def test_a_config_error_is_one_line_naming_the_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # what the paper configuration did when Snakemake merged the demo's ablation under it
    bad = snakemake_reads(
        None,
        {"detectors": [{"name": "b4", "model": "efficientnet_b4"}], "train": {"generalization": {"detectors": []}}},
    )
    with pytest.raises(dfconfig.ConfigError) as err:
        dfconfig.validate(bad, source="my.yaml")
    message = str(err.value)
    assert "\n" not in message
    assert "evaluate.frame_rate_ablation.detector: 'effnet_lite0' is not a configured detector" in message
    assert "'b4'" in message
    missing = snakemake_reads(
        None, {"detectors": [{"name": "b4", "model": "efficientnet_b4", "pretrained": "weights/b4.safetensors"}]}
    )
    missing["evaluate"].update(frame_rate_ablation=None, tsne_detectors=None)
    missing["train"]["generalization"]["detectors"] = []
    with pytest.raises(dfconfig.ConfigError, match=r"detectors.0.pretrained: weights file weights/b4.safetensors"):
        dfconfig.validate(missing, source="my.yaml")


def test_a_detector_trained_at_its_own_qualities_plans_only_those_models():
    config = dfconfig.validate(snakemake_reads(None))
    trained = {(r.detector, r.quality) for r in experiments.runs(config) if r.methods == "all"}
    assert ("effnet_lite0", 10) in trained and ("meso4", 10) not in trained
    # the grid key stays out of the model's description, so adding a quality reruns no existing model
    assert "train_qualities" not in experiments.detector_spec(config, "effnet_lite0")
    bad = snakemake_reads(None, {"train": {"qualities": [95]}})
    bad["detectors"][0]["train_qualities"] = [95, 50]
    with pytest.raises(dfconfig.ConfigError, match=r"detectors.0.train_qualities: 50 \(meso4\) is not one of"):
        dfconfig.validate(bad)


def _snakemake(workdir: Path, configfile: str | None, overrides: dict, *args: str) -> subprocess.CompletedProcess:
    # targets before --configfile, which takes every word after it as another config file
    cmd = [sys.executable, "-m", "snakemake", *args, "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    if configfile:
        cmd += ["--configfile", str(REPO / "configs" / configfile)]
    cmd += ["--cores", "2", "--max-jobs-per-timespan", "100/1s", "--config"]
    cmd += [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}" for key, value in overrides.items()]
    return subprocess.run(cmd, capture_output=True, text=True)


def _job_counts(text: str) -> dict[str, int]:
    table = text.split("Job stats:", 1)[1].split("\n\n", 1)[0] if "Job stats:" in text else ""
    rows = (line.split() for line in table.splitlines())
    return {r[0]: int(r[1]) for r in rows if len(r) == 2 and r[1].isdigit() and r[0] != "total"}


@pytest.mark.slow
@pytest.mark.parametrize("configfile", [None, *CONFIGS])
def test_the_workflow_plans_each_configs_whole_grid(configfile, tmp_path, monkeypatch, ffpp_tree_all_methods):
    """From the repository's config.yaml (copied into the working directory, as a user's run reads it), the
    config file and the user's --config, on a tree with all four methods: the manifest is built for real, then
    the dry run plans every model the config asks for."""
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    overrides = local_overrides(ffpp_tree_all_methods)
    raw = snakemake_reads(configfile, overrides)
    place_weights(raw, tmp_path)
    manifest = f"{raw.get('output_root', 'data')}/manifest.parquet"
    built = _snakemake(tmp_path, configfile, overrides, manifest)
    assert built.returncode == 0, built.stderr[-3000:]
    plan = _snakemake(tmp_path, configfile, overrides, "-n")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "Traceback" not in plan.stdout + plan.stderr
    counts = _job_counts(plan.stdout + plan.stderr)
    monkeypatch.chdir(tmp_path)  # validated where the stand-in weights are, as the run did
    config = dfconfig.validate(raw)
    runs = experiments.runs(config)
    assert counts["train"] == len(runs), counts
    assert counts["predict"] == len(runs), counts
    assert counts["tables"] == 1 and counts.get("probes", 0) == (1 if config["probes"] else 0), counts
    assert counts["gradcam"] == sum(r.methods == "all" for r in runs), counts


@pytest.mark.slow
def test_a_bad_config_stops_the_workflow_in_one_line(tmp_path):
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    proc = _snakemake(tmp_path, None, {"evaluate": {"frame_rate_ablation": {"detector": "nope"}}}, "-n")
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text
    assert "evaluate.frame_rate_ablation.detector: 'nope' is not a configured detector" in text
