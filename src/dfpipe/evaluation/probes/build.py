"""Building the frozen probe backbones: timm and open_clip models with their weights (the timm hub or a packaged
file, a URL, a file in the official layouts), and the last few built kept in memory."""

from __future__ import annotations

import contextlib
import logging
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub.constants as hf
import timm
import torch
from torch import Tensor, nn

from dfpipe.evaluation.probes.backbones import (
    WEIGHTS_HINT,
    BackboneSpec,
    clip_tag_config,
    input_config,
    is_url,
    open_clip_module,
    weights_id,
)
from dfpipe.models import weights as W


@dataclass
class Backbone:
    """A built, frozen backbone: `module(x)` maps a normalised N×3×S×S batch to N×D features."""

    spec: BackboneSpec
    module: nn.Module
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights_source: str


def _url_state_dict(spec: BackboneSpec) -> W.StateDict:
    if not W.reachable(spec.weights):
        raise LookupError(
            f"backbone {spec.name}: weights at {spec.weights} are unreachable (offline?); download "
            f"the file elsewhere and {WEIGHTS_HINT}"
        )
    state = torch.hub.load_state_dict_from_url(spec.weights, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "teacher"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    return dict(state)


class _Collect(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.INFO)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def _logged_by(logger: logging.Logger) -> Iterator[list[str]]:
    """The messages `logger` gives (INFO and up) while the block runs; they still reach the job's log."""
    lines: list[str] = []
    handler, level = _Collect(lines), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _timm_weights(spec: BackboneSpec) -> tuple[W.StateDict | None, str]:
    """(state dict, where it came from) for a timm backbone."""
    if spec.weights == "none":
        return None, "none (random initialisation)"
    if spec.weights in ("imagenet", "hub"):
        # dfpipe.models.weights logs where it found them; keep that line as the manifest's source
        try:
            with _logged_by(W.logger) as lines:
                state = W.imagenet(spec.model)
        except (LookupError, OSError, ValueError) as exn:
            raise LookupError(f"backbone {spec.name}: no weights for {spec.model} ({exn}); {WEIGHTS_HINT}") from exn
        source = lines[-1].split("<-", 1)[-1].strip() if lines else spec.weights
        source = "timm hub" if source.startswith("timm hub") else f"packaged file {Path(source.split(' (')[0]).name}"
        return state, source
    if is_url(spec.weights):
        return _url_state_dict(spec), spec.weights
    source = weights_id(spec)  # first: a missing file is named with the probes' hint
    return W.load_file(Path(spec.weights).expanduser()), source


def build_backbone(spec: BackboneSpec, device: str | torch.device = "cpu") -> Backbone:
    """The frozen backbone of `spec` on `device` (eval mode, no gradients, channels_last)."""
    size, mean, std = input_config(spec)
    try:
        if spec.kind == "open_clip":
            module, source = _build_open_clip(spec)
        else:
            state, source = _timm_weights(spec)  # first: unreachable weights fail before a ViT-B is built
            module = timm.create_model(spec.model, num_classes=0, pretrained=False)
            if state is not None:
                W.load_into(module, state, f"{spec.name} ({source})")
    except (ValueError, OSError) as exn:  # dfpipe.models.weights words its hint for detectors' `pretrained:`
        raise type(exn)(str(exn).replace(W.FILE_HINT, WEIGHTS_HINT)) from exn
    module = module.eval().requires_grad_(False).to(device, memory_format=torch.channels_last)
    return Backbone(spec, module, size, mean, std, source)


BUILT: dict[tuple, Backbone] = {}
# Backbones kept built: the seed's three (CLIP ViT-B/16, DINO ViT-B/16 and ResNet-50, ~0.8 GB together) are asked
# for in turn for each split, quality and transform, and rebuilding one (a 0.3-0.6 GB file read) costs seconds.
KEEP_BUILT = 3


def shared_backbone(spec: BackboneSpec, device: str | torch.device = "cpu") -> Backbone:
    """`build_backbone`, remembering the last KEEP_BUILT backbones built in `BUILT` (least recently used goes
    first)."""
    key = (spec, weights_id(spec), str(device))
    if key in BUILT:
        BUILT[key] = BUILT.pop(key)  # most recently used last
    else:
        while len(BUILT) >= KEEP_BUILT:
            del BUILT[next(iter(BUILT))]
        BUILT[key] = build_backbone(spec, device)
    return BUILT[key]


def _clip_file_state(path: Path, name: str) -> W.StateDict:
    """The tensors of a CLIP weights file: a plain state dict (.pth/.bin/.safetensors, open_clip's layout, as
    open_clip saves it) or OpenAI's TorchScript archive (ViT-B-16.pt; torch.load(weights_only=True), which
    open_clip's `pretrained=PATH` uses, refuses those). The archive is read with torch.jit.load for its tensors
    only: its TorchScript methods are never called."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            scripted = any(n.rsplit("/", 1)[-1] == "constants.pkl" for n in zf.namelist())
        if scripted:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated in favour of torch.export
                try:
                    archive = torch.jit.load(str(path), map_location="cpu")
                except Exception as exn:  # TorchScript's errors have no common base class
                    raise ValueError(
                        f"backbone {name}: weights file {path}: not a readable TorchScript archive "
                        f"({type(exn).__name__}); {WEIGHTS_HINT}"
                    ) from exn
            return {k: v for k, v in archive.state_dict().items() if isinstance(v, Tensor)}
    return W.load_file(path)


def _build_open_clip(spec: BackboneSpec) -> tuple[nn.Module, str]:
    open_clip = open_clip_module(spec)
    # QuickGELU where the weights were trained with it (OpenAI's): open_clip 3 only warns when a tag's activation
    # differs from the model config's, and knows nothing of a file's
    quick_gelu = bool(clip_tag_config(spec).get("quick_gelu", False))
    if spec.weights in ("hub", "imagenet"):
        try:  # cache only when the hub does not answer (huggingface_hub would retry for ~50 s)
            with W.hf_offline(not W.reachable(hf.ENDPOINT)):
                model = open_clip.create_model(
                    spec.model, pretrained=spec.pretrained_tag or "openai", force_quick_gelu=quick_gelu
                )
        except Exception as exn:  # hub and network errors have no common base class
            raise LookupError(
                f"backbone {spec.name}: open_clip could not fetch {spec.model} "
                f"{spec.pretrained_tag} ({type(exn).__name__}); {WEIGHTS_HINT}"
            ) from exn
        return _ClipImage(model), f"open_clip hub {spec.pretrained_tag}"
    if is_url(spec.weights):
        raise ValueError(
            f"backbone {spec.name}: kind open_clip takes weights hub (open_clip's pretrained tag), none or a file, "
            f"not a URL; download {spec.weights} and {WEIGHTS_HINT}"
        )
    source = "none (random initialisation)" if spec.weights == "none" else weights_id(spec)
    state = None if spec.weights == "none" else _clip_file_state(Path(spec.weights).expanduser(), spec.name)
    disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)  # open_clip warns that the model it builds holds no weights yet
    try:
        model = open_clip.create_model(spec.model, pretrained=None, force_quick_gelu=quick_gelu)
    finally:
        logging.disable(disabled)
    if state is not None:
        # the image tower only (the features); every one of its tensors must be in the file, with its shape
        state = {k.removeprefix("module."): v for k, v in state.items()}
        visual = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
        W.load_into(model.visual, visual, f"{spec.name} ({source})")
    return _ClipImage(model), source


class _ClipImage(nn.Module):
    """open_clip's image tower as a feature extractor (the embedding the seed probes)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.visual = model.visual

    def forward(self, x: Tensor) -> Tensor:
        return self.visual(x)
