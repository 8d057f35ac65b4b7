"""The config schema as the one source of truth: descriptions, defaults, method names, --config overrides."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from dfpipe import config as dfconfig
from dfpipe.data.layout import METHODS, ORIGINAL
from dfpipe.data.sources import demo
from dfpipe.models import train
from dfpipe.models.experiments import SETTING_KEYS

SCHEMA = yaml.safe_load(dfconfig.SCHEMA_PATH.read_text())
REPO_CONFIG = dfconfig.SCHEMA_PATH.parents[2] / "config.yaml"


def schema_keys(node: dict, path: str = ""):
    """(dotted path, subschema) of every key the schema declares, through objects and array items."""
    for key, sub in node.get("properties", {}).items():
        dotted = f"{path}.{key}" if path else key
        yield dotted, sub
        yield from schema_keys(sub, dotted)
        if isinstance(sub.get("items"), dict):
            yield from schema_keys(sub["items"], f"{dotted}[]")
        for alternative in sub.get("oneOf", []) + sub.get("anyOf", []):
            yield from schema_keys(alternative, dotted)


def test_every_schema_key_has_a_description():
    keys = dict(schema_keys(SCHEMA))
    assert len(keys) > 50  # the walk reaches nested keys (train.augment.*, detectors[].*)
    missing = [k for k, sub in keys.items() if not str(sub.get("description", "")).strip()]
    assert not missing, f"config.schema.yaml: keys without a description: {missing}; add `description:` to each"


def test_method_enums_are_the_layout_methods():
    props = SCHEMA["properties"]
    assert props["dataset"]["properties"]["methods"]["items"]["enum"] == list(METHODS)
    assert props["dataset"]["properties"]["methods"]["default"] == list(METHODS)
    assert props["frames"]["properties"]["per_method"]["propertyNames"]["enum"] == [ORIGINAL, *METHODS]


def test_code_defaults_are_the_schema_defaults():
    filled = dfconfig.validate({})
    assert {k: train.DEFAULTS[k] for k in SETTING_KEYS} == {k: filled["train"][k] for k in SETTING_KEYS}
    assert demo.DEFAULTS == filled["demo"]
    # Every config.yaml value the schema also defaults has the schema's type (config.yaml holds values only).
    assert dfconfig.validate(yaml.safe_load(REPO_CONFIG.read_text()))


def test_nested_defaults_are_what_validation_fills_in_lists():
    """schema_defaults reaches objects inside lists (test sources, their ganfaces settings, a detector's ela), and
    gives what validation fills into each list item."""
    entry = {"name": "gan", "kind": "ganfaces"}
    filled = dfconfig.validate({"evaluate": {"test_sources": [entry]}})["evaluate"]["test_sources"][0]
    ganfaces = dfconfig.schema_defaults("evaluate.test_sources.ganfaces")
    assert filled == {**dfconfig.schema_defaults("evaluate.test_sources"), **entry, "ganfaces": ganfaces}
    assert filled["compression"] == "c23" and filled["frames_per_video"] == 32
    assert ganfaces["generators"] == ["dcgan_digiface"] and ganfaces["identities"] is None
    detector = {"name": "m", "model": "meso4", "ela": {}}
    ela = dfconfig.validate({"detectors": [detector]})["detectors"][0]["ela"]
    assert ela == dfconfig.schema_defaults("detectors.ela") == {"quality": 90, "scale": 15}


def test_ela_and_the_predict_cli_take_the_schema_defaults():
    from dfpipe import __main__ as cli
    from dfpipe.models.ela import ELA

    filled = dfconfig.validate({})
    assert ELA().to_dict() == {"quality": 90, "scale": 15.0} == dfconfig.schema_defaults("detectors.ela")
    args = cli._parser().parse_args(["predict", "x.mp4", "--model", "m.pt"])
    assert args.frames == filled["frames"]["per_video"] == 32


def test_strings_from_config_overrides_are_read_as_the_schema_types():
    """What `--config "compress={qualities: [95, 50]}"` passes (YAML BaseLoader: every scalar a string)."""
    raw = {
        "compress": {"qualities": ["95", "50"]},
        "local": {"root": "null"},
        "frames": {"per_method": {"original": "8"}},
        "train": {"amp": "false", "optimizer": "sgd", "qualities": "[95]", "lr": "1e-3"},
    }
    cfg = dfconfig.validate(raw)
    assert cfg["compress"]["qualities"] == [95, 50] and cfg["local"]["root"] is None
    assert cfg["frames"]["per_method"] == {"original": 8}
    assert cfg["train"]["amp"] is False and cfg["train"]["optimizer"] == "sgd" and cfg["train"]["qualities"] == [95]
    assert cfg["train"]["lr"] == 1e-3
    # A string that is no number stays a string, and validation names the key.
    with pytest.raises(dfconfig.ConfigError, match=r"compress\.qualities\.1: 'abc' is not of type 'integer'"):
        dfconfig.validate({"compress": {"qualities": ["95", "abc"]}})


@pytest.mark.slow
def test_a_nested_config_override_works_through_snakemake(tmp_path):
    from test_workflow import planned, snakemake_command

    base = yaml.safe_load(REPO_CONFIG.read_text())
    cmd = snakemake_command(tmp_path, base, "-n", "--config", "compress={qualities: [95, 10, 50]}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert planned(proc)["shard_index"] == 3
    bad = subprocess.run(
        snakemake_command(tmp_path, base, "-n", "--config", "compress={qualities: [95, x]}"),
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "compress.qualities.1: 'x' is not of type 'integer'" in bad.stdout + bad.stderr


def test_rule_scripts_read_the_config_through_params_only():
    scripts = dfconfig.SCHEMA_PATH.parents[2] / "scripts"
    readers = [s.name for s in scripts.glob("*.py") if "snakemake.config" in s.read_text()]
    assert not readers, (
        f"{readers} read snakemake.config: pass what they need as the rule's params (Snakemake then "
        "reruns the job when it changes)"
    )


def test_probe_defaults_are_the_schema_defaults():
    """probe_table and its helpers, called outside the workflow, score as the workflow's defaults do."""
    import inspect

    from dfpipe.evaluation import probes

    schema = dfconfig.schema_defaults("probes")
    table = inspect.signature(probes.probe_table).parameters
    assert table["n_boot"].default == schema["bootstrap"] == 200
    assert (table["components"].default, table["ae_epochs"].default) == (schema["components"], schema["ae_epochs"])
    for helper in (probes.shard_features, probes.array_features, probes.shard_getter):
        assert inspect.signature(helper).parameters["batch_size"].default == schema["batch_size"]
