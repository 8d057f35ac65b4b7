"""Load and validate config.yaml against the workflow's JSON schema, filling in defaults."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config value is invalid; the message names the key and what is allowed."""


def _with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _describe(error: jsonschema.ValidationError) -> str:
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "enum":
        return f"{key}: {error.instance!r} is not allowed; allowed values: {', '.join(map(repr, error.validator_value))}"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        return f"{key}: {error.message}; allowed keys: {', '.join(allowed)}"
    return f"{key}: {error.message}"


def validate(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Return a validated copy of `config` with schema defaults filled in; raise ConfigError otherwise."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    config = copy.deepcopy(config)
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = "\n".join(f"  - {_describe(e)}" for e in errors)
        raise ConfigError(f"{source} is invalid:\n{lines}")
    _check_cross_fields(config, source)
    _check_training(config, source)
    return config


def _check_cross_fields(config: dict[str, Any], source: str) -> None:
    if config["source"] == "local" and not config["local"]["root"]:
        raise ConfigError(f"{source}: source is 'local' but local.root is not set; point it at an FF++-layout tree")
    if config["source"] == "ffpp" and not config["ffpp"]["accept_tos"]:
        raise ConfigError(
            f"{source}: source is 'ffpp' but ffpp.accept_tos is false; read the FaceForensics++ terms of use "
            "and set ffpp.accept_tos: true to download"
        )


def _check_training(config: dict[str, Any], source: str) -> None:
    names = [d["name"] for d in config["detectors"]]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: detectors: names must be unique, got {names}")
    qualities = config["jpeg"]["qualities"]
    if config["train"]["qualities"] is None:
        config["train"]["qualities"] = qualities[:1]
    for q in config["train"]["qualities"]:
        if q not in qualities:
            raise ConfigError(f"{source}: train.qualities: {q} is not one of jpeg.qualities {qualities}")
    gen = config["train"]["generalization"]
    if gen["quality"] is None:
        gen["quality"] = config["train"]["qualities"][0]
    if gen["quality"] not in qualities:
        raise ConfigError(f"{source}: train.generalization.quality: {gen['quality']} is not one of jpeg.qualities {qualities}")
    for name in gen["detectors"]:
        if name not in names:
            raise ConfigError(f"{source}: train.generalization.detectors: {name!r} is not a configured detector; "
                              f"allowed values: {', '.join(map(repr, names))}")


def load(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return validate(raw, source=str(path))
