"""The experiment grid: which models are trained (detector × training quality × training methods), and the
one function that trains a model from a job description, in-process or under torchrun for several GPUs."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dfpipe.data.layout import METHODS

logger = logging.getLogger(__name__)

ALL = "all"
# config["train"] keys that are training settings (the rest describe the grid or the hardware)
SETTING_KEYS = (
    "epochs",
    "max_steps_per_epoch",
    "batch_size",
    "lr",
    "weight_decay",
    "optimizer",
    "momentum",
    "scheduler",
    "step_epochs",
    "step_gamma",
    "seed",
    "checkpoint_every",
    "augment",
    "amp",
    "channels_last",
    "deterministic",
)
# detector spec keys that are training settings of that detector (they override config["train"], a whole value
# each: a detector's `augment` replaces train.augment), not model arguments: a seed's recipe (e.g. SGD with
# momentum 0.9 at lr 1e-5 for 80 epochs) beside the other detectors' train defaults. frames_per_method is set by
# the frame-rate ablation's variant (frame_rate_ablation).
SPEC_SETTING_KEYS = (
    *(k for k in SETTING_KEYS if k not in ("seed", "checkpoint_every", "amp", "channels_last", "deterministic")),
    "frames_per_method",
)
# name of the frame-rate ablation's model: the detector trained on fewer frames of the augmented methods
ABLATION_SUFFIX = "_fewer_frames"
# detector spec keys that say which models are trained (runs), not what a model is
SPEC_GRID_KEYS = ("train_qualities",)
# detector spec keys create_detector takes by name; everything else is an argument of the model
SPEC_BUILD_KEYS = ("name", "model", "pretrained", "input_size", "ela")


@dataclass(frozen=True)
class Run:
    detector: str
    quality: int
    methods: str  # "all" or one FF++ method (trained against the originals)


def train_qualities(config: dict[str, Any], spec: dict[str, Any]) -> list[int]:
    """The qualities a detector is trained at: its entry's `train_qualities`, else `train.qualities`."""
    return spec.get("train_qualities") or config["train"]["qualities"]


def runs(config: dict[str, Any]) -> list[Run]:
    """Every model the config asks for: each detector at each of its training qualities on all methods, plus the
    generalization detectors on each single configured method."""
    out = [Run(d["name"], q, ALL) for d in config["detectors"] for q in train_qualities(config, d)]
    gen = config["train"]["generalization"]
    methods = [m for m in config["dataset"]["methods"] if m in METHODS]
    out += [Run(name, gen["quality"], m) for name in gen["detectors"] for m in methods]
    ablation = frame_rate_ablation(config)
    if ablation:
        out.append(Run(ablation["variant"], ablation["quality"], ALL))
    return out


def frame_rate_ablation(config: dict[str, Any]) -> dict[str, Any] | None:
    """The augmented-frame-rate ablation config (evaluate.frame_rate_ablation) with its variant's name, or None.

    The detector as configured is the "after" model (every extracted frame); the variant is the same detector
    trained at the same quality on `frames_per_method` frames per video of the named methods (a subsample of
    the training split's frames by frame order), the "before" model. Validation and test keep every frame."""
    ablation = (config.get("evaluate") or {}).get("frame_rate_ablation")
    if not ablation or not ablation.get("detector"):
        return None
    name, quality = ablation["detector"], ablation["quality"]
    where = "evaluate.frame_rate_ablation"
    names = [d["name"] for d in config["detectors"]]
    if name not in names:
        raise ValueError(
            f"{where}.detector: {name!r} is not a configured detector; allowed values: {', '.join(map(repr, names))}"
        )
    trained_at = train_qualities(config, next(d for d in config["detectors"] if d["name"] == name))
    if quality not in trained_at:
        raise ValueError(
            f"{where}.quality: {quality} is not a training quality of {name} {trained_at}; "
            "the ablation compares with the detector trained there"
        )
    return {**ablation, "variant": name + ABLATION_SUFFIX}


def check_tsne(config: dict[str, Any]) -> list[str] | None:
    """evaluate.tsne_detectors (the detectors the t-SNE plot shows) when every name is a configured detector;
    None when unset (the plot then shows the detector of highest validation AUC). ValueError naming the key
    and the allowed names otherwise."""
    names = (config.get("evaluate") or {}).get("tsne_detectors")
    if names is None:
        return None
    allowed = [d["name"] for d in config["detectors"]]
    hint = f"allowed values: {', '.join(map(repr, allowed))} (or null: the detector of highest validation AUC)"
    if not names:
        raise ValueError(f"evaluate.tsne_detectors: the list is empty; name at least one detector; {hint}")
    unknown = [n for n in names if n not in allowed]
    if unknown:
        what = "is not a configured detector" if len(unknown) == 1 else "are not configured detectors"
        raise ValueError(f"evaluate.tsne_detectors: {', '.join(map(repr, unknown))} {what}; {hint}")
    return list(names)


def detector_spec(config: dict[str, Any], name: str) -> dict[str, Any]:
    """A detector's entry without its grid keys: what its models are (a job's params), not which are trained,
    so that training a detector at one more quality reruns none of its other models."""
    for spec in config["detectors"]:
        if spec["name"] == name:
            return {k: v for k, v in spec.items() if k not in SPEC_GRID_KEYS}
    ablation = frame_rate_ablation(config)
    if ablation and name == ablation["variant"]:
        base = detector_spec(config, ablation["detector"])
        return {**base, "name": name, "frames_per_method": dict(ablation["frames_per_method"])}
    raise KeyError(f"detector {name!r} is not in config detectors")


def training_settings(config: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """A detector's training settings (what dfpipe.models.train.resolve_settings takes): config["train"]'s, each of
    SPEC_SETTING_KEYS that the detector's entry sets replaced by its value."""
    settings = {k: config["train"][k] for k in SETTING_KEYS}
    settings.update({k: spec[k] for k in SPEC_SETTING_KEYS if k in spec})
    return settings


def build_detector(spec: dict[str, Any]):
    from dfpipe.models.detectors import create_detector
    from dfpipe.models.ela import ELA

    kwargs = {k: v for k, v in spec.items() if k not in SPEC_BUILD_KEYS + SPEC_SETTING_KEYS}
    detector = create_detector(
        spec["model"], pretrained=spec.get("pretrained", "none"), input_size=spec.get("input_size"), **kwargs
    )
    # an input transform, not a model argument: the loader (training, evaluation) reads it off the detector
    detector.ela = ELA.from_dict(spec.get("ela"))
    return detector


def train_job(job: dict[str, Any]) -> Path:
    """Train the model a job describes (keys: spec, settings, methods, train, val, out_dir, device)."""
    from dfpipe.models.train import resolve_settings, seed_everything, train

    settings = dict(job["settings"])
    if job["methods"] != ALL:
        settings["methods"] = ["original", job["methods"]]
    # Seeded before the model is built: its initial weights (a new head, or a model from scratch) are part of
    # the run, and must not depend on what the process drew before.
    seed_everything(resolve_settings(settings)["seed"])
    detector = build_detector(job["spec"])
    return train(
        detector,
        [Path(p) for p in job["train"]],
        [Path(p) for p in job["val"]],
        Path(job["out_dir"]),
        settings,
        device=job["device"],
        spec=job["spec"],
    )


def launch(job: dict[str, Any], gpus: int) -> Path:
    """Run `train_job` here, or under torchrun with one process per GPU (DDP) when gpus > 1."""
    if gpus <= 1:
        return train_job(job)
    out_dir = Path(job["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    job_file = out_dir / "job.json"
    job_file.write_text(json.dumps(job, indent=2))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={gpus}",
        "-m",
        "dfpipe.models.experiments",
        "train",
        str(job_file),
    ]
    logger.info("launching: " + " ".join(cmd))
    subprocess.run(cmd, check=True, env=os.environ.copy())
    return out_dir / "best.pt"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dfpipe.models.experiments")
    parser.add_argument("command", choices=["train"])
    parser.add_argument("job", type=Path, help="job.json written by launch()")
    args = parser.parse_args(argv)
    # A torchrun worker has no job log of its own: its rank 0's lines go to stdout, as the launcher's do.
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    train_job(json.loads(args.job.read_text()))


if __name__ == "__main__":
    main()
