"""The experiment grid: which models are trained (detector × training quality × training methods), each
detector's spec and training settings, and the detector a spec builds. `dfpipe.models.train` runs the jobs.

The workflow reads this module when it parses the rules, so it imports neither torch nor timm at its top:
`build_detector` loads them when called."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfpipe.config import check_frame_rate_ablation, train_qualities
from dfpipe.data.layout import METHODS

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
    the training split's frames by frame order), the "before" model. Validation and test keep every frame.
    ValueError naming the key when the detector is not configured or not trained at that quality."""
    ablation = check_frame_rate_ablation(config)
    return None if ablation is None else {**ablation, "variant": ablation["detector"] + ABLATION_SUFFIX}


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
    """The detector a spec (a detector's config entry) describes: its model with the model arguments, and its ELA."""
    # here, not at the top: the workflow reads this module, and these load torch and timm
    from dfpipe.models.detectors import create_detector
    from dfpipe.models.ela import ELA

    kwargs = {k: v for k, v in spec.items() if k not in SPEC_BUILD_KEYS + SPEC_SETTING_KEYS}
    detector = create_detector(
        spec["model"], pretrained=spec.get("pretrained", "none"), input_size=spec.get("input_size"), **kwargs
    )
    # an input transform, not a model argument: the loader (training, evaluation) reads it off the detector
    detector.ela = ELA.from_dict(spec.get("ela"))
    return detector
