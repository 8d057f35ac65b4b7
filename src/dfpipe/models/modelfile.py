"""The deployable model file (a training run's `best.pt`): written and read here, and nowhere else.

The file is a dict saved with `torch.save` and read back with `weights_only=True` (a file that would need to run
code to load is refused):
  model                 the detector's state dict (CPU tensors)
  detector              its registered name
  input_size, mean, std its input settings
  spec                  the detector's config entry, when known: rebuilds the model with its arguments and ELA
  threshold             the decision threshold chosen on validation (files without one decide at 0.5)
  ela, faces            input settings recorded apart from the spec, when given
The trainer also stores what binds the file to its run (settings, fingerprint) and the epoch it comes from
(epoch, val_auc).

Every problem met while reading a file is a `ModelFileError` (a ValueError) naming the file and, for a bad
value, the key; a missing file is a FileNotFoundError.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfpipe.io import atomic_path
from dfpipe.models.detectors import create_detector
from dfpipe.models.ela import ELA
from dfpipe.models.experiments import build_detector
from dfpipe.models.weights import load_plain

# The faces stage's settings when the model file does not record them: the schema's defaults (a test checks
# they agree with workflow/schemas/config.schema.yaml).
FACE_DEFAULTS = {"size": 256, "margin": 1.3, "align": True, "min_confidence": 0.5, "min_face_size": 32}
# the schema's bounds of the same settings, (low, high, whole number), checked when a model file is loaded
FACE_BOUNDS = {
    "size": (32, 1024, True),
    "margin": (1, 3, False),
    "min_confidence": (0, 1, False),
    "min_face_size": (1, None, True),
}
DEFAULT_THRESHOLD = 0.5
FROM_FILE = "the model file"
INTACT = "use an intact model file (copy best.pt again from its run folder, or retrain that run)"
DAMAGED = "the file is damaged or was edited: copy it again from its run folder, or retrain that run"


class ModelFileError(ValueError):
    """A model file that cannot be read or used: unreadable, not a model, a bad value, weights that do not fit."""


def detector_name(detector: nn.Module) -> str:
    """The name a model file records for `detector` (its registered name)."""
    return str(getattr(detector, "name", type(detector).__name__))


# -- writing -------------------------------------------------------------------------------------------------
def write_model_file(
    path: Path,
    detector: nn.Module,
    spec: dict[str, Any] | None = None,
    threshold: float | None = None,
    ela: ELA | None = None,
    faces: dict[str, Any] | None = None,
    *,
    weights: dict[str, torch.Tensor] | None = None,
    run: dict[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """Write the model file of `detector` to `path` (atomically): its `weights` (default: its current state
    dict), name and input settings, plus the detector `spec`, the validation `threshold`, `ela` and `faces`
    settings when given. `run` (the trainer's settings and fingerprint) and `extra` (e.g. epoch, val_auc) are
    stored as they are."""
    state = weights if weights is not None else detector.state_dict()
    # keys in the order the trainer has always written them
    obj: dict[str, Any] = {
        "model": {k: v.detach().cpu() for k, v in state.items()},
        "detector": detector_name(detector),
        **(run or {}),
        "input_size": int(detector.input_size),
        "mean": tuple(detector.mean),
        "std": tuple(detector.std),
    }
    if spec is not None:
        obj["spec"] = dict(spec)
    obj.update(extra)
    if threshold is not None:
        obj["threshold"] = float(threshold)
    if ela is not None:
        obj["ela"] = ela.to_dict()
    if faces is not None:
        obj["faces"] = dict(faces)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


# -- reading -------------------------------------------------------------------------------------------------
def read_model_file(path: Path) -> dict[str, Any]:
    """The stored dict of a model file, as it is (nothing checked but that it loads plainly and holds weights)."""
    path = Path(path)
    try:
        ckpt = load_plain(path, str(path), "checkpoint", INTACT)
    except ValueError as err:
        raise ModelFileError(str(err)) from err
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ModelFileError(f"{path}: not a dfpipe checkpoint (no model); {INTACT}")
    return ckpt


@dataclass
class Model:
    """A trained detector with everything predict and export need, read from one model file."""

    detector: nn.Module
    path: Path
    name: str
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    threshold: float
    threshold_source: str
    ela: ELA | None = None
    faces: dict[str, Any] = field(default_factory=lambda: dict(FACE_DEFAULTS))
    spec: dict[str, Any] | None = None

    @property
    def threshold_note(self) -> str | None:
        """The line predict and export show when the file holds no validation threshold (older files)."""
        if self.threshold_source == FROM_FILE:
            return None
        return f"no validation threshold in {self.path}: deciding at {self.threshold:g}"


def _bad(path: Path, key: str, value: Any, what: str) -> ModelFileError:
    return ModelFileError(f"{path}: {key}: {value!r} is not {what}; {DAMAGED}")


def _number(path: Path, key: str, value: Any, low: float, high: float | None, whole: bool = False) -> Any:
    """`value` when it is a finite number (a whole one when `whole`) in [low, high]; else an error naming the
    file and the key."""
    kind = "a whole number" if whole else "a number"
    real = isinstance(value, numbers.Integral if whole else numbers.Real) and not isinstance(value, bool)
    if not (real and math.isfinite(value) and low <= value and (high is None or value <= high)):
        raise _bad(path, key, value, f"{kind} in [{low}, {high}]" if high is not None else f"{kind} >= {low}")
    return value


def _numbers(path: Path, key: str, value: Any, positive: bool) -> tuple[float, ...]:
    """Three finite numbers (mean or std per RGB channel; > 0 when `positive`)."""
    what = "3 numbers > 0" if positive else "3 finite numbers"
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise _bad(path, key, value, what)
    for v in value:
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v) or (positive and v <= 0):
            raise _bad(path, key, value, what)
    return tuple(float(v) for v in value)


def _checked_faces(path: Path, faces: Any) -> dict[str, Any]:
    """The face-crop settings of a model file over the defaults; keys it does not know are left out (a config's
    whole `faces` section may be stored)."""
    if faces is None:
        return dict(FACE_DEFAULTS)
    if not isinstance(faces, dict):
        raise _bad(path, "faces", faces, "a mapping")
    out = dict(FACE_DEFAULTS)
    for key, value in faces.items():
        if key == "align":
            if not isinstance(value, bool):
                raise _bad(path, "faces.align", value, "true or false")
            out[key] = value
        elif key in FACE_BOUNDS:
            low, high, whole = FACE_BOUNDS[key]
            out[key] = _number(path, f"faces.{key}", value, low, high, whole)
    return out


def _checked_values(path: Path, ckpt: dict[str, Any]) -> dict[str, Any]:
    """What a model file records besides the weights, each value checked: input_size, mean and std (those it
    holds), threshold (None when it holds none), ELA and face settings."""
    values: dict[str, Any] = {}
    if ckpt.get("spec") is not None and not isinstance(ckpt["spec"], dict):
        raise _bad(path, "spec", ckpt["spec"], "a mapping")
    if "input_size" in ckpt:
        values["input_size"] = int(_number(path, "input_size", ckpt["input_size"], 8, 4096, whole=True))
    for key in ("mean", "std"):
        if key in ckpt:
            values[key] = _numbers(path, key, ckpt[key], positive=key == "std")
    threshold = ckpt.get("threshold")
    values["threshold"] = None if threshold is None else float(_number(path, "threshold", threshold, 0, 1))
    spec = ckpt.get("spec") or {}
    try:
        values["ela"] = ELA.from_dict(ckpt.get("ela") or spec.get("ela") or (ckpt.get("settings") or {}).get("ela"))
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{path}: ela: {err}; {DAMAGED}") from err
    values["faces"] = _checked_faces(path, ckpt.get("faces"))
    return values


def _build(ckpt: dict[str, Any], path: Path) -> tuple[nn.Module, dict[str, Any] | None]:
    spec = ckpt.get("spec")
    try:
        if spec is not None:
            # the weights come from the file: never fetch pretrained ones
            return build_detector({**spec, "pretrained": "none"}), spec
        return create_detector(str(ckpt["detector"]), input_size=ckpt.get("input_size")), None
    except (TypeError, ValueError, KeyError) as err:
        raise ModelFileError(
            f"{path}: cannot rebuild its detector {ckpt.get('detector')!r} ({err}); the file needs the "
            f"detector spec it was trained with (key 'spec')"
        ) from err


def load_model(path: Path, device: str | torch.device = "cpu") -> Model:
    """The model of a model file (the trainer's best.pt), in eval mode on `device`, every value checked before
    any work (a damaged value is named, not met mid-run)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: model file not found; pass a trained model, e.g. data/models/<detector>/<run>/best.pt"
        )
    ckpt = read_model_file(path)
    values = _checked_values(path, ckpt)
    detector, spec = _build(ckpt, path)
    try:
        detector.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ModelFileError(
            f"{path}: its weights do not fit a {ckpt.get('detector')!r} built from "
            f"{'its spec' if spec else 'the registered name alone'} ({first}); "
            + (
                ""
                if spec
                else "files without a detector spec (key 'spec') can only be rebuilt with "
                "default model arguments: re-save it with write_model_file(..., spec=...)"
            )
        ) from err
    # what the file records wins over the builder's defaults: it is what the model was trained with
    detector.input_size = values.get("input_size", detector.input_size)
    detector.mean = values.get("mean", tuple(detector.mean))
    detector.std = values.get("std", tuple(detector.std))
    # crops arrive channels_last (H×W×3 arrays permuted), as the loader's batches do; weights in the same order
    # save the per-layer reorder: measured 1.2-1.7× faster for EfficientNet-Lite0 on CPU
    detector.to(device, memory_format=torch.channels_last).eval()
    # the threshold the trainer chose on validation travels in the file; older files have none
    threshold, source = values["threshold"], FROM_FILE
    if threshold is None:
        threshold = DEFAULT_THRESHOLD
        source = f"the default (no validation threshold in {path}: deciding at {threshold:g})"
    ela, faces = values["ela"], values["faces"]
    name = str(spec.get("name", ckpt["detector"])) if spec else str(ckpt["detector"])
    return Model(
        detector, path, name, detector.input_size, detector.mean, detector.std, threshold, source, ela, faces, spec
    )
