"""Fault cases of the configuration: one per class of invalid config. Each stops before any work with a message
naming the file, the key and what to write instead; the repaired config then validates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dfpipe import config as dfconfig

REPO = Path(__file__).resolve().parents[2]


def _refused(tmp_path: Path, patch: dict, *words: str) -> str:
    """Write `patch` as a config file, load it, and check the error names the file and every word."""
    path = tmp_path / "my.yaml"
    path.write_text(yaml.safe_dump(patch))
    with pytest.raises(dfconfig.ConfigError) as info:
        dfconfig.load(path)
    message = str(info.value)
    assert str(path) in message, message
    for word in words:
        assert word in message, (word, message)
    return message


def test_wrong_type(tmp_path):
    """Config value of the wrong type (faces.size: "big"): names the key and the expected type."""
    _refused(tmp_path, {"faces": {"size": "big"}}, "faces.size", "'big' is not of type 'integer'")


def test_unknown_key(tmp_path):
    """Config key misspelt (faces.marign): names it and lists the allowed keys."""
    _refused(tmp_path, {"faces": {"marign": 1.3}}, "faces", "'marign' was unexpected", "allowed keys", "margin")


def test_bad_enum(tmp_path):
    """Config value outside its choices (dataset.compression: c30): names the key and the allowed values."""
    _refused(tmp_path, {"dataset": {"compression": "c30"}}, "dataset.compression", "'c30'", "'c23'", "'c40'")


def test_out_of_range_number(tmp_path):
    """Config number out of range (compress.qualities: 101): names the item and the maximum."""
    _refused(tmp_path, {"compress": {"qualities": [95, 101]}}, "compress.qualities.1", "101", "maximum of 100")


def test_training_quality_not_compressed(tmp_path):
    """Config trains at a quality no shard has (train.qualities 50): names both keys."""
    _refused(tmp_path, {"train": {"qualities": [50]}}, "train.qualities: 50 is not one of compress.qualities")


def test_unknown_generalization_detector(tmp_path):
    """Config lists an unknown detector in train.generalization: names it and the configured ones."""
    _refused(
        tmp_path,
        {"train": {"generalization": {"detectors": ["nope"]}}},
        "train.generalization.detectors",
        "'nope' is not a configured detector",
        "'meso4'",
    )


def test_duplicate_detector_names(tmp_path):
    """Config holds two detectors of one name: refused (their outputs would share a folder)."""
    _refused(
        tmp_path,
        {"detectors": [{"name": "a", "model": "meso4"}, {"name": "a", "model": "meso4"}]},
        "detectors: names must be unique",
    )


def test_local_without_root(tmp_path):
    """Config selects source local without local.root: says to point it at an FF++ tree."""
    _refused(tmp_path, {"source": "local"}, "local.root is not set", "FF++-layout tree")


def test_ffpp_without_terms(tmp_path):
    """Config selects source ffpp without accept_tos: says to read the terms and set ffpp.accept_tos."""
    _refused(tmp_path, {"source": "ffpp"}, "ffpp.accept_tos is false", "ffpp.accept_tos: true")


def test_ffpp_without_splits(tmp_path):
    """Config selects source ffpp without splits.dir: refused before any download, pointing at FF++'s splits."""
    _refused(
        tmp_path,
        {"source": "ffpp", "ffpp": {"accept_tos": True}},
        "splits.dir is not set",
        "github.com/ondyari/FaceForensics/tree/master/dataset/splits",
    )
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}.json").write_text("[]")
    path = tmp_path / "fixed.yaml"
    path.write_text(yaml.safe_dump({"source": "ffpp", "ffpp": {"accept_tos": True}, "splits": {"dir": str(tmp_path)}}))
    assert dfconfig.load(path)["splits"]["dir"] == str(tmp_path)


def test_cjpeg_flags_override_quality(tmp_path):
    """Config cjpeg_flags [-quality, -5] (q1 files labelled q95): refused naming the flag and why."""
    _refused(
        tmp_path,
        {"compress": {"cjpeg_flags": ["-quality", "-5"]}},
        "compress.cjpeg_flags.0",
        "'-quality' is refused",
        "compress.qualities",
        "remove it from compress.cjpeg_flags",
        "allowed cjpeg flags: -optimize",
    )


def test_cjpeg_flags_change_colour_space(tmp_path):
    """Config cjpeg_flags [-gray] (an abbreviation of -grayscale): refused naming what cjpeg reads it as."""
    _refused(
        tmp_path,
        {"compress": {"cjpeg_flags": ["-gray"]}},
        "compress.cjpeg_flags.0",
        "reads it as -grayscale",
        "colour space",
    )


def test_output_root_under_a_file(tmp_path):
    """Config output_root below a regular file: one line naming output_root, the file and the fix."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file")
    message = _refused(
        tmp_path,
        {"output_root": str(blocker / "data")},
        f"output_root: {blocker / 'data'}",
        f"because {blocker} is a regular file",
        "set output_root to a path under a folder",
    )
    assert "\n" not in message


def test_results_dir_is_a_file(tmp_path):
    """Config results_dir is an existing regular file: one line naming results_dir and the fix."""
    blocker = tmp_path / "results"
    blocker.write_text("a file")
    message = _refused(tmp_path, {"results_dir": str(blocker)}, f"results_dir: {blocker} is a file, not a folder")
    assert "\n" not in message


def test_malformed_yaml(tmp_path):
    """Config file is malformed YAML: names the file and the line of the error."""
    path = tmp_path / "my.yaml"
    path.write_text("faces:\n  size: [128\n")
    with pytest.raises(dfconfig.ConfigError) as info:
        dfconfig.load(path)
    assert f"{path}: not valid YAML" in str(info.value) and "line 2" in str(info.value)


def test_snakemake_stops_in_one_line_on_output_root_under_a_file(tmp_path):
    """Workflow started with output_root below a file: Snakemake stops with the one-line error, no traceback."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"output_root": str(blocker / "data")}))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(cfg),
            "-n",
            "--cores",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"output_root: {blocker / 'data'} cannot be created because {blocker} is a regular file" in text
    assert "Traceback" not in text and blocker.read_text() == "a file"


def test_misspelt_probe_backbone(tmp_path):
    """Config names a probe backbone that does not exist (lite_0), a new one without model and weights, or a combination of an unknown one: key and allowed names."""
    _refused(
        tmp_path,
        {"probes": {"backbones": ["mobilenetv2", "lite_0"]}},
        "probes.backbones.1: 'lite_0' is not a probe backbone",
        "'lite0'",
        "'clip_vitb16'",
        "{name, model, weights}",
    )
    _refused(
        tmp_path, {"probes": {"backbones": [{"name": "mine", "model": "resnet18"}]}}, "probes.backbones.0", "weights"
    )
    _refused(
        tmp_path,
        {"probes": {"backbones": ["mobilenetv2", "lite0"], "combinations": ["mobilenetv2+lite1"]}},
        "probes.combinations.0: 'lite1' is not a configured backbone",
        "allowed values: 'mobilenetv2', 'lite0'",
    )
    path = tmp_path / "fixed.yaml"
    path.write_text(
        yaml.safe_dump({"probes": {"backbones": ["mobilenetv2", "lite0"], "combinations": ["mobilenetv2+lite0"]}})
    )
    assert dfconfig.load(path)["probes"]["backbones"] == ["mobilenetv2", "lite0"]


def test_unknown_timm_model(tmp_path):
    """Config names a detector model or multi_attention backbone that timm lacks (resnet181): refused with the closest names."""
    _refused(
        tmp_path,
        {"detectors": [{"name": "r", "model": "resnet181"}]},
        "detectors.0.model: 'resnet181' is not a registered detector",
        "not a timm model",
        "closest: 'resnet18'",
    )
    _refused(
        tmp_path,
        {"detectors": [{"name": "m", "model": "multi_attention", "backbone": "efficientnet_b44"}]},
        "detectors.0.backbone: 'efficientnet_b44' is not a timm model",
        "'efficientnet_b4'",
    )
    _refused(
        tmp_path,
        {"detectors": [{"name": "m", "model": "meso4", "backbone": "efficientnet_b4"}]},
        "detectors.0.backbone: only model multi_attention takes a backbone",
    )
    _refused(
        tmp_path,
        {"probes": {"backbones": [{"name": "mine", "model": "resnet181", "weights": "imagenet"}]}},
        "probes.backbones.0.model: 'resnet181' is not a timm model",
    )
    path = tmp_path / "fixed.yaml"
    path.write_text(
        yaml.safe_dump({"detectors": [{"name": "r", "model": "resnet34"}, {"name": "x", "model": "legacy_xception"}]})
    )
    assert [d["model"] for d in dfconfig.load(path)["detectors"]] == ["resnet34", "legacy_xception"]


def test_image_source_root_missing(tmp_path):
    """Config gives an image-folder test source a root that does not exist, none, or one without real/ and fake/: the key named at start-up."""
    gone = tmp_path / "my_images"
    entry = {"name": "folder", "kind": "images"}
    _refused(
        tmp_path,
        {"evaluate": {"test_sources": [{**entry, "root": str(gone)}]}},
        f"evaluate.test_sources.0.root: {gone} does not exist",
        "real/ and fake/<generator>/",
    )
    _refused(
        tmp_path, {"evaluate": {"test_sources": [entry]}}, "evaluate.test_sources.0.root is not set", "kind images"
    )
    (gone / "real").mkdir(parents=True)
    _refused(
        tmp_path,
        {"evaluate": {"test_sources": [{**entry, "root": str(gone)}]}},
        f"evaluate.test_sources.0.root: {gone} has no fake/ folder",
    )
    (gone / "fake" / "gan").mkdir(parents=True)
    path = tmp_path / "fixed.yaml"
    path.write_text(yaml.safe_dump({"evaluate": {"test_sources": [{**entry, "root": str(gone)}]}}))
    assert dfconfig.load(path)["evaluate"]["test_sources"][0]["root"] == str(gone)


def test_report_before_the_results_exist(tmp_path):
    """`snakemake --report` before any run: stops in one line saying which command to run first, no traceback."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"output_root": str(tmp_path / "data"), "results_dir": str(tmp_path / "results")}))
    snakemake = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path)]
    proc = subprocess.run(
        [*snakemake, "--configfile", str(cfg), "--cores", "1", "--report", str(tmp_path / "report.html")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and not (tmp_path / "report.html").exists()
    assert f"{tmp_path / 'results' / 'auc_table.csv'} does not exist yet" in text, text
    assert "run `snakemake --cores N` first" in text and "Traceback" not in text
