"""The experiment grid: per-detector training settings and the augmented-frame-rate ablation."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from test_loader import make_shards, videos

from dfpipe.config import check_tsne
from dfpipe.data.loader import ShardStream
from dfpipe.evaluation import tables
from dfpipe.models import experiments
from dfpipe.models.experiments import ALL, Run

CONFIG = {
    "detectors": [
        {
            "name": "meso4",
            "model": "meso4",
            "pretrained": "none",
            "input_size": 128,
            "lr": 1e-3,
            "epochs": 8,
            "max_steps_per_epoch": 40,
            "batch_size": 16,
        },
        {"name": "lite0", "model": "tf_efficientnet_lite0", "pretrained": "none", "input_size": 64},
    ],
    "train": {
        "qualities": [95, 10],
        "generalization": {"detectors": [], "quality": 95},
        "epochs": 2,
        "max_steps_per_epoch": 25,
        "batch_size": 32,
        "lr": 3e-4,
        "weight_decay": 0.0,
        "optimizer": "adam",
        "momentum": 0.9,
        "scheduler": "cosine",
        "step_epochs": 3,
        "step_gamma": 0.1,
        "seed": 1,
        "checkpoint_every": 500,
        "augment": {},
        "amp": True,
        "channels_last": True,
        "deterministic": None,
    },
    "dataset": {"methods": ["Deepfakes", "NeuralTextures"]},
    "evaluate": {
        "bootstrap": 10,
        "frame_rate_ablation": {"detector": "lite0", "quality": 95, "frames_per_method": {"NeuralTextures": 2}},
    },
}


def test_detector_overrides_epochs_steps_batch_and_lr_and_they_do_not_reach_the_model() -> None:
    """A detector's epochs / max_steps_per_epoch / batch_size / lr override train's; the model is built."""
    meso = experiments.detector_spec(CONFIG, "meso4")
    settings = experiments.training_settings(CONFIG, meso)
    assert (settings["epochs"], settings["max_steps_per_epoch"], settings["batch_size"], settings["lr"]) == (
        8,
        40,
        16,
        1e-3,
    )
    other = experiments.training_settings(CONFIG, experiments.detector_spec(CONFIG, "lite0"))
    assert (other["epochs"], other["max_steps_per_epoch"], other["batch_size"]) == (2, 25, 32)
    assert experiments.build_detector(meso).input_size == 128  # TypeError if a setting reached the model


def test_ablation_adds_one_run_whose_spec_trains_on_fewer_frames() -> None:
    """The ablation variant: one more run at the ablation quality, same model, frames_per_method a setting."""
    runs = experiments.runs(CONFIG)
    assert runs[-1] == Run("lite0" + experiments.ABLATION_SUFFIX, 95, ALL)
    assert len(runs) == 5
    spec = experiments.detector_spec(CONFIG, runs[-1].detector)
    assert spec["model"] == "tf_efficientnet_lite0" and spec["input_size"] == 64
    assert experiments.training_settings(CONFIG, spec)["frames_per_method"] == {"NeuralTextures": 2}
    assert "frames_per_method" not in experiments.training_settings(CONFIG, experiments.detector_spec(CONFIG, "lite0"))
    experiments.build_detector(spec)
    off = copy.deepcopy(CONFIG)
    off["evaluate"]["frame_rate_ablation"] = None
    assert len(experiments.runs(off)) == 4


@pytest.mark.parametrize(
    "key, value, names", [("detector", "nope", "configured detector"), ("quality", 77, "training quality")]
)
def test_ablation_config_errors_name_the_key(key, value, names) -> None:
    """An ablation detector not in detectors, or a quality not trained, stops with the key named."""
    bad = copy.deepcopy(CONFIG)
    bad["evaluate"]["frame_rate_ablation"][key] = value
    with pytest.raises(ValueError, match=f"frame_rate_ablation.{key}.*{names}"):
        experiments.runs(bad)


def test_frames_per_method_keeps_every_kth_frame_of_that_method_only(tmp_path) -> None:
    """frames_per_method: NT videos keep 2 of their 4 frames (positions 0 and 2), other methods all."""
    vids = videos(2, 2) + [("NeuralTextures", "000_001", 1), ("NeuralTextures", "001_002", 1)]
    shards = make_shards(tmp_path, "train", vids, frames=4)
    full = ShardStream(shards, batch_size=2, input_size=16, train=True)
    fewer = ShardStream(shards, batch_size=2, input_size=16, train=True, frames_per_method={"NeuralTextures": 2})
    keys = lambda s, m: sorted(e.key for e in s.entries if e.key.startswith(m))  # noqa: E731
    assert keys(fewer, "NeuralTextures") == [
        "NeuralTextures-000_001-00000",
        "NeuralTextures-000_001-00020",
        "NeuralTextures-001_002-00000",
        "NeuralTextures-001_002-00020",
    ]
    for method in ("original", "Deepfakes"):
        assert keys(fewer, method) == keys(full, method) and len(keys(full, method)) == 8
    assert len(full.entries) - len(fewer.entries) == 4
    with pytest.raises(ValueError, match="frames_per_method: NeuralTextures"):
        ShardStream(shards, batch_size=2, input_size=16, train=True, frames_per_method={"NeuralTextures": 0})


def metrics_rows(detector: str, aucs: dict[str, float]) -> list[dict]:
    return [
        {
            "level": "frame",
            "detector": detector,
            "train_quality": 95,
            "train_methods": "all",
            "test_quality": q,
            "test_set": s,
            "auc": a - (95 - q) / 1000,
        }
        for q in (95, 10)
        for s, a in aucs.items()
    ]


def test_augmentation_table_reports_before_after_and_change_per_test_quality(tmp_path) -> None:
    """Augmentation table: per test quality × method, AUC before (fewer frames) and after, % of before."""
    sets = ["FF-DF", "FF-F2F", "FF-FS", "FF-NT", "all"]
    before = dict(zip(sets, [0.9, 0.8, 0.8, 0.5, 0.75]))
    after = dict(zip(sets, [0.9, 0.8, 0.8, 0.6, 0.78]))
    variant = "lite0" + experiments.ABLATION_SUFFIX
    df = pd.DataFrame(
        metrics_rows(variant, before) + metrics_rows("lite0", after) + metrics_rows("meso4", {s: 0.1 for s in sets})
    )
    table = tables.augmentation_table(df, "lite0", variant, 95)
    assert list(table.test_quality) == [95] * 5 + [10] * 5
    assert list(table.test_set[:5]) == tables.METHOD_SETS + ["all"]
    nt = table[(table.test_quality == 95) & (table.test_set == "FF-NT")].iloc[0]
    assert (nt.auc_before, nt.auc_after) == (0.5, 0.6) and np.isclose(nt.change_pct, 20.0)
    assert np.allclose(table[table.test_set == "FF-DF"].change_pct, 0.0)
    ablation = experiments.frame_rate_ablation(CONFIG)
    written = tables.write_augmentation_table(df, tmp_path, ablation, {"k": "v"})
    assert {p.name for p in written} == {"augmentation_table.csv", "augmentation_table.md"}
    assert pd.read_csv(tmp_path / "augmentation_table.csv").shape == (10, 5)
    assert "NeuralTextures: 2" in (tmp_path / "augmentation_table.md").read_text()
    assert (tmp_path / "augmentation_table.md.provenance.json").exists()
    with pytest.raises(ValueError, match="no frame-level metrics of 'lite0'"):
        tables.augmentation_table(df[df.detector != "lite0"], "lite0", variant, 95)


def test_workflow_plans_the_ablation_run_and_its_table(ffpp_tree, tmp_path) -> None:
    """Workflow with frame_rate_ablation: the variant is trained and scored, the table is a tables output."""
    import subprocess

    from test_workflow import planned, snakemake_command, tiny_config

    config = {
        **tiny_config(ffpp_tree),
        "detectors": [{"name": "m", "model": "meso4", "input_size": 32}],
        "train": {"qualities": [77, 10], "generalization": {"detectors": []}},
        "evaluate": {"frame_rate_ablation": {"detector": "m", "quality": 77, "frames_per_method": {"Deepfakes": 2}}},
    }
    proc = subprocess.run(
        snakemake_command(tmp_path, config, "-n", "--forceall", "results/augmentation_table.csv"),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    jobs = planned(proc)
    assert jobs["train"] == 3 and jobs["predict"] == 3  # m at q77 and q10, and m_fewer_frames at q77


# the frozen-probes seed's approach 1: ResNet-50 from ImageNet, SGD with momentum 0.9 at lr 1e-5, 128 × 80 epochs
SGD_SEED = {
    "name": "resnet50",
    "model": "resnet50",
    "pretrained": "imagenet",
    "input_size": 256,
    "optimizer": "sgd",
    "momentum": 0.9,
    "lr": 1.0e-5,
    "batch_size": 128,
    "epochs": 80,
    "weight_decay": 0.0,
    "scheduler": "step",
    "step_epochs": 20,
    "step_gamma": 0.5,
    "augment": {"hflip": 0.5},
}


def test_a_detector_sets_its_own_optimizer_and_schedule_and_the_others_keep_train_defaults() -> None:
    """A detector entry's optimizer / momentum / weight_decay / scheduler / step_* / augment / lr / batch_size /
    epochs override train's for that detector only: the trainer's own factories build SGD (momentum 0.9, lr 1e-5)
    and its step schedule for it, Adam with train's lr and the cosine schedule for the others; none reaches the
    model's constructor."""
    from dfpipe import config as dfconfig
    from dfpipe.models.train import create_optimizer, create_scheduler, resolve_settings

    config = dfconfig.validate(
        {
            "detectors": [SGD_SEED, {"name": "meso4", "model": "meso4", "input_size": 64}],
            "train": {"lr": 3e-4, "weight_decay": 5e-4, "epochs": 2, "augment": {"jpeg": 0.3}},
        }
    )
    seed_spec = experiments.detector_spec(config, "resnet50")
    s = resolve_settings(experiments.training_settings(config, seed_spec))
    assert (s["batch_size"], s["epochs"], s["augment"]) == (128, 80, {"hflip": 0.5})
    detector = experiments.build_detector({**seed_spec, "pretrained": "none"})  # TypeError if a setting got there
    optimizer = create_optimizer(detector, s)
    assert type(optimizer) is torch.optim.SGD
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (1e-5, 0.9, 0.0)
    scheduler = create_scheduler(optimizer, s, steps_per_epoch=10)
    assert type(scheduler) is torch.optim.lr_scheduler.StepLR
    assert (scheduler.step_size, scheduler.gamma) == (200, 0.5)

    meso_spec = experiments.detector_spec(config, "meso4")
    other = resolve_settings(experiments.training_settings(config, meso_spec))
    assert (other["batch_size"], other["epochs"], other["augment"]) == (32, 2, {"jpeg": 0.3})
    optimizer = create_optimizer(experiments.build_detector(meso_spec), other)
    assert type(optimizer) is torch.optim.Adam
    assert (optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["weight_decay"]) == (3e-4, 5e-4)
    assert type(create_scheduler(optimizer, other, 10)) is torch.optim.lr_scheduler.CosineAnnealingLR
    with pytest.raises(dfconfig.ConfigError, match=r"detectors\.0\.optimizer: 'rmsprop' is not allowed"):
        dfconfig.validate({"detectors": [{**SGD_SEED, "optimizer": "rmsprop"}]})
    with pytest.raises(dfconfig.ConfigError, match=r"detectors\.0\.augment: Additional properties"):
        dfconfig.validate({"detectors": [{**SGD_SEED, "augment": {"mixup": 0.5}}]})


def test_check_tsne_names_the_key_and_the_configured_detectors() -> None:
    assert check_tsne(CONFIG) is None
    named = copy.deepcopy(CONFIG)
    named["evaluate"]["tsne_detectors"] = ["lite0", "meso4"]
    assert check_tsne(named) == ["lite0", "meso4"]
    named["evaluate"]["tsne_detectors"] = ["lite0", "effnet"]
    with pytest.raises(
        ValueError,
        match=r"evaluate\.tsne_detectors: 'effnet' is not a configured detector; "
        r"allowed values: 'meso4', 'lite0'",
    ):
        check_tsne(named)
