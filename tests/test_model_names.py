"""dfpipe.model_names: the light copies of the registries' names agree with the registries, the shipped configs
validate without timm, and timm's name list is cached per version."""

from __future__ import annotations

import functools
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import timm
import yaml

from dfpipe import model_names
from dfpipe.evaluation import probes
from dfpipe.models.detectors import REGISTRY

REPO = Path(__file__).resolve().parents[1]


def test_copies_agree_with_the_registries():
    """DETECTORS is REGISTRY's names, PROBE_BACKBONES is BACKBONES' names and kinds, and the timm names both build
    are in TIMM_MODELS_USED, each a real timm model."""
    assert sorted(model_names.DETECTORS) == sorted(REGISTRY)
    assert model_names.PROBE_BACKBONES == {name: spec.kind for name, spec in probes.BACKBONES.items()}
    built = {f.args[0] for f in REGISTRY.values() if isinstance(f, functools.partial)}
    built |= {model_names.arch_name(s.model) for s in probes.BACKBONES.values() if s.kind == "timm"}
    assert built <= model_names.TIMM_MODELS_USED
    assert all(timm.is_model(name) for name in model_names.TIMM_MODELS_USED)


def test_shipped_configs_name_no_model_outside_the_tables():
    """Every detector model and backbone of config.yaml and configs/*.yaml is known without asking timm, so their dry
    runs do not import it."""
    for path in [REPO / "config.yaml", *sorted((REPO / "configs").glob("*.yaml"))]:
        for spec in yaml.safe_load(path.read_text()).get("detectors") or []:
            for name in (spec["model"], spec.get("backbone")):
                assert name is None or name in model_names.DETECTORS or name in model_names.TIMM_MODELS_USED, (
                    path.name,
                    name,
                )


def test_timm_names_are_cached_per_version(tmp_path, monkeypatch):
    """The first lookup writes timm's names to a file named by timm's version; a later process reads it and never
    imports timm."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    model_names.timm_models.cache_clear()
    try:
        names = model_names.timm_models()
    finally:
        model_names.timm_models.cache_clear()
    cache = tmp_path / "dfpipe" / f"timm-{importlib.metadata.version('timm')}-models.txt"
    assert "resnet34" in names and set(cache.read_text().split()) == names
    cache.write_text("my_net\n")  # what the second process finds
    check = (
        "import json, sys; from dfpipe import model_names as m; "
        "print(json.dumps([m.is_timm_model(n) for n in ('my_net.tag', 'resnet34', 'resnet18')] + ['timm' in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, env={"XDG_CACHE_HOME": str(tmp_path)}, check=True
    )
    assert json.loads(out.stdout) == [True, False, True, False]
