"""Codecs, the platform path and perturbations as test settings in the DAG of the tiny workflow: what they plan,
what they write, and that MozJPEG's outputs do not change when they are added."""

from __future__ import annotations

import hashlib
import json
import tarfile

import pandas as pd
import pytest
from test_workflow import Project, copy_code, planned, tiny_config, trained_config

pytestmark = pytest.mark.slow

SETTINGS = {
    "codecs": [{"codec": "libjpeg-turbo", "qualities": [75]}, {"codec": "webp", "qualities": [75, 30]}],
    "platform": {"crfs": [40]},
}
PERTURB = [{"kind": "blur", "levels": [2]}, {"kind": "noise", "levels": [10]}]
NAMES = ["turbo-q75", "webp-q75", "webp-q30", "h264-crf40", "blur-s2", "noise-s10"]


def with_settings(config: dict) -> dict:
    return {**config, "compress": {**config["compress"], **SETTINGS}, "perturb": PERTURB}


def digests(work, pattern: str) -> dict[str, str]:
    return {str(p.relative_to(work)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(work.glob(pattern))}


@pytest.fixture(scope="module")
def project(tmp_path_factory, ffpp_tree) -> Project:
    proj = Project(tmp_path_factory.mktemp("work"), tiny_config(ffpp_tree), copy_code(tmp_path_factory.mktemp("repo")))
    proj.config = trained_config(proj.config)
    proj.run()  # MozJPEG only, as before test settings existed
    proj.mozjpeg = {**digests(proj.work, "data/compress/q*/*/*.parquet"), **digests(proj.work, "data/shards/q*/*")}
    proj.run(with_settings(proj.config))
    return proj


def test_adding_settings_leaves_every_mozjpeg_output_as_it_was(project):
    after = {**digests(project.work, "data/compress/q*/*/*.parquet"), **digests(project.work, "data/shards/q*/*")}
    assert after == project.mozjpeg and len(after) > 10


def test_each_setting_has_test_crops_shards_fidelity_and_scores(project):
    work = project.work
    faces = pd.concat(pd.read_parquet(p) for p in work.glob("data/faces/*/*.parquet"))
    n_test = int(((faces["status"] == "ok") & (faces["split"] == "test")).sum())
    for name in NAMES:
        table = pd.concat(pd.read_parquet(p) for p in work.glob(f"data/compress/{name}/*.parquet"))
        assert len(table) == n_test > 0 and set(table["split"]) == {"test"} and set(table["setting"]) == {name}
        counts = json.loads((work / f"data/shards/{name}/test.counts.json").read_text())
        assert counts["samples"] == n_test and counts["setting"] == name
        with tarfile.open(work / f"data/shards/{name}/test-0000.tar") as tar:
            names = tar.getnames()
        ext = {"turbo": "jpg", "webp": "webp"}.get(name.split("-")[0], "png")
        assert sum(n.endswith(f".{ext}") for n in names) == n_test
    preds = pd.read_parquet(work / "data/predictions/test_settings/webp-q30.parquet")
    assert set(preds["detector"]) == {"meso4"} and len(preds) == n_test and preds["score"].between(0, 1).all()


def test_platform_path_reencodes_the_video_and_keeps_the_crop_geometry(project):
    table = pd.concat(pd.read_parquet(p) for p in project.work.glob("data/compress/h264-crf40/*.parquet"))
    assert table["encoder"].str.contains("libx264 -crf 40").all()
    # one bitrate per video (the re-encoded file's), lower than the CRF-23 source's would be at CRF 40
    assert (table.groupby("key")["bpp"].nunique() == 1).all() and table["bpp"].between(0.001, 2).all()
    fid = pd.read_parquet(project.work / "data/fidelity/h264-crf40.parquet")
    # aligned with the lossless crop (same geometry): far above what a shifted crop gives, below a lossless copy
    assert 22 < fid["psnr"].mean() < 45


def test_results_tables_and_plots(project):
    work = project.work
    rd = pd.read_csv(work / "results/bitrate/rate_distortion.csv")
    assert list(rd["setting"]) == ["q77", "q10", *NAMES]
    assert rd.loc[rd["kind"] == "perturb", "bpp"].isna().all() and rd.loc[rd["kind"] != "perturb", "bpp"].gt(0).all()
    webp = rd[rd["codec"] == "webp"].set_index("setting")
    assert webp.loc["webp-q75", "bpp"] > webp.loc["webp-q30", "bpp"]
    assert webp.loc["webp-q75", "psnr_mean"] > webp.loc["webp-q30", "psnr_mean"]
    robust = pd.read_csv(work / "results/bitrate/robustness.csv")
    assert set(robust["setting"]) == set(rd["setting"]) and robust["auc"].between(0, 1).all()
    at = pd.read_csv(work / "results/bitrate/auc_at_bpp.csv")
    assert {"mozjpeg", "webp"} <= set(at["codec"]) and "auc@1bpp" in at.columns
    for plot in ("rate_distortion", "auc_vs_bpp"):
        assert (work / f"results/bitrate/{plot}.png").stat().st_size > 5000
    assert planned(project.run(with_settings(project.config), "-n")) == {}


def test_adding_one_codec_setting_plans_only_its_jobs(project):
    config = with_settings(project.config)
    config["compress"]["codecs"] = [*SETTINGS["codecs"], {"codec": "avif", "qualities": [50]}]
    jobs = planned(project.run(config, "-n"))
    assert jobs == {
        "compress_setting": 2,  # one per method
        "fidelity_setting": 1,
        "shards_setting": 1,
        "predict_setting": 1,
        "bitrate": 1,
        "all": 1,
    }, jobs
