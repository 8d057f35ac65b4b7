"""The model names a job resolves, known without importing torch or timm, so that `dfpipe.config` can check them
when the workflow starts: a misspelt name then stops the dry run instead of a training job minutes later.

`DETECTORS` and `PROBE_BACKBONES` copy the names of `dfpipe.models.detectors.REGISTRY` and `dfpipe.evaluation.probes.BACKBONES`
(those modules import torch; tests/test_model_names.py checks that the copies agree). `TIMM_MODELS_USED` are the
timm names the registries build and the shipped configs name: known good without asking timm. Any other name
is looked up in `timm_models()`, which imports timm (seconds) only when its cache file for the installed timm
version is missing, so later dry runs and every job's reading of the Snakefile stay light.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
from pathlib import Path

from dfpipe.io import atomic_path

# dfpipe.models.detectors.REGISTRY's names
DETECTORS = (
    "meso4",
    "mesoinception4",
    "efficientnet_b4",
    "multi_attention",
    "resnet18",
    "resnet50",
    "mobilenet_v1",
    "mobilenet_v2",
)
# dfpipe.evaluation.probes.BACKBONES: name -> the library that builds it (BackboneSpec.kind)
PROBE_BACKBONES = {
    "mobilenetv2": "timm",
    "lite0": "timm",
    "clip_vitb16": "open_clip",
    "dino_vitb16": "timm",
    "dino_resnet50": "timm",
}
TIMM_MODELS_USED = frozenset(
    {
        "efficientnet_b4",
        "legacy_xception",
        "mobilenetv1_100",
        "mobilenetv2_100",
        "resnet18",
        "resnet50",
        "tf_efficientnet_lite0",
        "vit_base_patch16_224",
    }
)


def arch_name(model: str) -> str:
    """A timm model name without its pretrained tag ("vit_base_patch16_224.dino" -> "vit_base_patch16_224"), as
    timm itself reads it."""
    return model.split(".", 1)[0]


def _cache_file(version: str) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "dfpipe" / f"timm-{version}-models.txt"


@functools.cache
def timm_models() -> frozenset[str] | None:
    """Every architecture name timm builds, deprecated aliases included; None when timm is not installed.

    Read from a cache file per timm version (under $XDG_CACHE_HOME or ~/.cache, dfpipe/); written on the first
    call, and a cache that cannot be written costs only the import next time."""
    try:
        version = importlib.metadata.version("timm")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = _cache_file(version)
    try:
        return frozenset(path.read_text().split())
    except OSError:
        pass
    import timm  # only here: the workflow reads this module, and the cache spares it timm's import

    names = sorted({*timm.list_models(), *timm.models.get_deprecated_models()})
    try:
        with atomic_path(path) as tmp:  # a job reading it meanwhile sees no file or the whole file
            tmp.write_text("\n".join(names) + "\n")
    except OSError:
        pass
    return frozenset(names)


def is_timm_model(model: str) -> bool:
    """Whether timm builds `model` (a pretrained tag after a dot allowed); True when timm is not installed (the
    job that needs it says so)."""
    if arch_name(model) in TIMM_MODELS_USED:
        return True
    names = timm_models()
    return names is None or arch_name(model) in names
