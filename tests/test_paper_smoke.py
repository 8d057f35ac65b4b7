"""The paper configuration runs: configs/ffpp-paper.yaml with only size caps overridden, on CPU, on a generated
FF++-layout tree with all four methods, through every stage it enables to results/auc_table.csv.

Whatever more a run here needed than the caps below would be a defect of the configuration (fix it there). The
weights files it names are official-layout stand-ins with random weights, made by the test where the config says
they go (a site puts the real files there: docs/WEIGHTS.md)."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import torchscript_archive
from snakemake.common.configfile import load_configfile

from dfpipe import config as dfconfig
from dfpipe.models import experiments

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs" / "ffpp-paper.yaml"
pytestmark = pytest.mark.slow

# Key paths (detector entries as detectors.*) the smoke run may change: sizes and counts, nothing of a recipe.
SIZE_CAPS = {
    "frames.per_video",
    "frames.per_method",
    "faces.min_faces_per_video",
    "compress.qualities",
    "compress.codecs",
    "compress.platform.crfs",
    "perturb",
    "train.qualities",
    "shards.per_split",
    "batching.videos_per_job",
    "fidelity.frames_per_video",
    "train.epochs",
    "train.max_steps_per_epoch",
    "train.batch_size",
    "train.checkpoint_every",
    "detectors.*.input_size",
    "detectors.*.batch_size",
    "detectors.*.epochs",
    "evaluate.bootstrap",
    "evaluate.frame_rate_ablation.frames_per_method",
    "probes.components",
    "probes.ae_epochs",
    "probes.bootstrap",
    "probes.batch_size",
}


def smoke_caps(paper: dict) -> dict:
    """The paper config at smoke size: one frame a video (2 of NeuralTextures), two qualities, one level of each
    codec and perturbation, one step of 4 crops per model, 96-px CNN inputs (ViT probes keep their own 224, the
    probe stage's main cost)."""
    smoke = copy.deepcopy(paper)
    smoke["frames"].update(per_video=1, per_method={"NeuralTextures": 2})
    smoke["faces"]["min_faces_per_video"] = 1
    smoke["compress"]["qualities"] = [95, 77]
    # every codec, the platform path and every perturbation, at one level each
    for codec in smoke["compress"]["codecs"]:
        codec["qualities"] = codec["qualities"][-1:]
    smoke["compress"]["platform"]["crfs"] = smoke["compress"]["platform"]["crfs"][-1:]
    for perturbation in smoke["perturb"]:
        perturbation["levels"] = perturbation["levels"][-1:]
    smoke["train"]["qualities"] = [95]
    smoke["shards"]["per_split"] = {"train": 1, "val": 1, "test": 1}
    smoke["batching"]["videos_per_job"] = 8
    smoke["fidelity"]["frames_per_video"] = 1
    smoke["train"].update(epochs=1, max_steps_per_epoch=1, batch_size=4, checkpoint_every=1)
    for spec in smoke["detectors"]:
        spec["input_size"] = 96
        for key in ("batch_size", "epochs"):
            if key in spec:
                spec[key] = {"batch_size": 4, "epochs": 1}[key]
    smoke["evaluate"]["bootstrap"] = 10
    smoke["evaluate"]["frame_rate_ablation"]["frames_per_method"] = {"NeuralTextures": 1}
    smoke["probes"].update(components=4, ae_epochs=1, bootstrap=5, batch_size=16)
    return smoke


def changed_paths(a, b, prefix: str = "") -> set[str]:
    """Key paths where `b` differs from `a` (list items of `detectors` as detectors.*)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {p for k in a.keys() | b.keys() for p in changed_paths(a.get(k), b.get(k), f"{prefix}{k}.")}
    if prefix == "detectors." and isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return {p for x, y in zip(a, b) for p in changed_paths(x, y, "detectors.*.")}
    return set() if a == b else {prefix.rstrip(".")}


# official file name (docs/WEIGHTS.md) -> the timm architecture whose keys it holds
TIMM_FILES = {
    "efficientnet_b4.ra2_in1k.safetensors": "efficientnet_b4",
    "xception-43020ad28.pth": "legacy_xception",
    "resnet18-f37072fd.pth": "resnet18",
    "resnet50-0676ba61.pth": "resnet50",
    "mobilenetv1_100.ra4_e3600_r224_in1k.safetensors": "mobilenetv1_100",
    "dino_vitbase16_pretrain.pth": "vit_base_patch16_224",  # DINO's hub file: the ViT without a head
    "dino_resnet50_pretrain.pth": "resnet50",  # torchvision keys without fc
}


def write_official_weights(path: Path) -> None:
    """Random weights saved as the official file of that name is laid out (docs/WEIGHTS.md)."""
    import timm

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name == "ViT-B-16.pt":  # OpenAI's TorchScript archive of fp16 tensors
        import open_clip

        state = open_clip.create_model("ViT-B-16", pretrained=None, force_quick_gelu=True).state_dict()
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        state |= {
            k: torch.tensor(v) for k, v in (("input_resolution", 224), ("context_length", 77), ("vocab_size", 49408))
        }
        torchscript_archive(state).save(str(path))
        return
    state = timm.create_model(TIMM_FILES[path.name], num_classes=0).state_dict()
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, ffpp_tree_all_methods):
    work = tmp_path_factory.mktemp("paper-smoke")
    shutil.copy(REPO / "config.yaml", work / "config.yaml")  # as a run from the repository reads it
    paper = load_configfile(str(PAPER))
    smoke = smoke_caps(paper)
    (work / "smoke.yaml").write_text(yaml.safe_dump(smoke, sort_keys=False))
    files = {path for _, path in dfconfig.weight_files(paper)}
    for rel in sorted(files):
        write_official_weights(work / rel)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work)]
    cmd += ["--configfile", str(PAPER), str(work / "smoke.yaml"), "--cores", "2"]
    cmd += ["--max-jobs-per-timespan", "100/1s", "--config", f"local={{root: {ffpp_tree_all_methods}}}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    report = subprocess.run([*cmd, "--report", str(work / "report.zip")], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr[-3000:]
    return work, paper, smoke


def test_only_size_caps_differ_from_the_paper_config():
    paper = load_configfile(str(PAPER))
    changed = changed_paths(paper, smoke_caps(paper))
    beyond = {p for p in changed if not any(p == cap or p.startswith(cap + ".") for cap in SIZE_CAPS)}
    assert changed and not beyond, beyond


def test_every_paper_detector_trains_and_is_scored(smoke_run):
    work, paper, _ = smoke_run
    metrics = pd.read_csv(work / "results/metrics.csv")
    scored = set(metrics.detector)
    assert {d["name"] for d in paper["detectors"]} <= scored
    assert paper["evaluate"]["frame_rate_ablation"]["detector"] + experiments.ABLATION_SUFFIX in scored
    auc = pd.read_csv(work / "results/auc_table.csv")
    assert len(auc) and auc.select_dtypes("number").notna().any().any()
    for spec in paper["detectors"]:
        assert (work / f"data/models/{spec['name']}/q95-all/best.pt").is_file(), spec["name"]


def test_table_3_probes_gradcam_and_the_report(smoke_run):
    work, paper, _ = smoke_run
    table3 = pd.read_csv(work / "results/augmentation_table.csv")
    # the study's Table 3: B4 on fewer NeuralTextures frames ("before") against all of them ("after")
    assert len(table3) and table3[["auc_before", "auc_after"]].notna().all().all()
    assert set(table3.test_quality) == set(smoke_run[2]["compress"]["qualities"])
    probes = pd.read_csv(work / "results/probe_table.csv")
    assert {b["name"] for b in paper["probes"]["backbones"]} <= set(probes.backbone)
    assert set(probes.test_transform) == set(paper["probes"]["test_transforms"])
    for spec in paper["detectors"]:  # a grid per test quality of every model trained on all methods
        grids = sorted((work / f"results/gradcam/{spec['name']}/q95-all").glob("q*.png"))
        assert [g.name for g in grids] == ["q77.png", "q95.png"], spec["name"]
    assert (work / "results/plots/tsne.png").stat().st_size > 0
    assert (work / "report.zip").stat().st_size > 0


def test_every_codec_platform_setting_and_perturbation_is_scored(smoke_run):
    work, paper = smoke_run[0], smoke_run[1]
    robust = pd.read_csv(work / "results/bitrate/robustness.csv")
    codecs = {c["codec"] for c in paper["compress"]["codecs"]} | {"mozjpeg", "h264"}
    assert codecs | {p["kind"] for p in paper["perturb"]} == set(robust["codec"])
    assert {d["name"] for d in paper["detectors"]} <= set(robust["detector"]) and robust["auc"].notna().any()
    assert (work / "results/bitrate/auc_vs_bpp.png").stat().st_size > 0
