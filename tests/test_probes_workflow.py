"""Test sources and probes in the DAG of the tiny workflow: a GAN-face test source, frozen-backbone probes and the cross-dataset
matrix, built by Snakemake from the shards and a trained model."""

from __future__ import annotations

import tarfile

import numpy as np
import pandas as pd
import pytest
from test_workflow import Project, copy_code, planned, tiny_config, trained_config

pytestmark = pytest.mark.slow


def probes_config(config: dict) -> dict:
    """The tiny trained config plus a 6-identity GAN-face (3 pairs: one train, one val, one test) test source and small probes on MobileNetV2."""
    full = trained_config(config)
    full["evaluate"] = {
        **full["evaluate"],
        "test_sources": [{"name": "gan", "kind": "ganfaces", "ganfaces": {"identities": 6, "views": 2, "pool": 2}}],
    }
    full["probes"] = {
        "backbones": ["mobilenetv2"],
        "classifiers": ["linear_probe", "svm", "knn1", "naive_bayes"],
        "reductions": ["none", "pca"],
        "transforms": ["none", "blur"],
        "train_qualities": [77],
        "input_size": 64,
        "components": 4,
        "bootstrap": 5,
    }
    return full


@pytest.fixture(scope="module")
def project(tmp_path_factory, ffpp_tree) -> Project:
    proj = Project(tmp_path_factory.mktemp("work"), tiny_config(ffpp_tree), copy_code(tmp_path_factory.mktemp("repo")))
    proj.run(probes_config(proj.config))
    return proj


def test_test_source_shards_in_the_main_format(project):
    """The GAN-face set's shards hold real and fake samples at every quality, with counts and index; its PSNR/SSIM
    report is written."""
    for q in (77, 10):
        folder = project.work / f"data/test_sources/gan/shards/q{q}"
        assert (folder / "index.json").is_file() and (folder / "test.counts.json").is_file()
        with tarfile.open(folder / "test-0000.tar") as tar:
            labels = {tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".cls")}
        assert labels == {b"0", b"1"}
    # the PSNR/SSIM report covers the set: real and generated images at both qualities, fidelity falling with q
    report = pd.read_csv(project.work / "results/fidelity/test_sources_psnr_ssim.csv")
    assert set(report["dataset"]) == {"gan"} and set(report["quality"]) == {77, 10} and len(set(report["method"])) >= 2
    mean = report.groupby("quality")["psnr_mean"].mean()
    assert mean[77] > mean[10] and report["n"].gt(0).all()


def test_probe_table_has_real_numbers(project):
    table = pd.read_csv(project.work / "results/probe_table.csv")
    # 1 backbone x 2 reductions x 4 classifiers x 2 transforms x 1 train quality x 2 test qualities
    assert len(table) == 32
    assert set(table["test_quality"]) == {77, 10} and set(table["classifier"]) >= {"svm", "linear_probe"}
    assert table["auc"].between(0, 1).all() and table["error"].isna().all()
    assert (project.work / "results/probe_effects.png").stat().st_size > 1000
    assert (project.work / "results/probe_table.md").read_text().startswith("# Probe table")


def test_cross_dataset_matrix_has_detectors_and_probes_both_ways(project):
    matrix = pd.read_csv(project.work / "results/cross_dataset_matrix.csv")
    assert len(matrix) and np.isfinite(matrix["auc"]).all() and matrix["bacc"].between(0, 1).all()
    pairs = set(zip(matrix["kind"], matrix["train_dataset"], matrix["test_dataset"]))
    # the detector on its own test split and on the GAN faces; probes trained on each dataset and on their union,
    # each tested on both (its own included)
    probe_pairs = {("probe", tr, te) for tr in ("local", "gan", "union") for te in ("local", "gan")}
    assert pairs == {("detector", "local", "local"), ("detector", "local", "gan"), *probe_pairs}
    probe = matrix[matrix["kind"] == "probe"]
    assert all(qs == {77, 10} for qs in probe.groupby(["train_dataset", "test_dataset"])["test_quality"].agg(set))
    assert set(matrix["test_quality"]) == {77, 10}
    assert (project.work / "results/plots/cross_dataset.png").stat().st_size > 1000


def test_rerun_is_a_no_op(project):
    assert planned(project.run(probes_config(project.config), "-n")) == {}
