"""Load and validate config.yaml against the workflow's JSON schema, filling in defaults."""

from __future__ import annotations

import copy
import difflib
import functools
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from dfpipe import axes, model_names
from dfpipe.data.layout import ORIGINAL, SPLITS_URL, originals_of

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config value is invalid; the message names the key and what is allowed."""


# cjpeg flags allowed in compress.cjpeg_flags: they change how MozJPEG searches and codes the quantised
# coefficients, never the quality, colour space, sampling or file format a quality label promises.
# Value: None for a bare flag, else the pattern of the value that must follow it as the next list item.
CJPEG_FLAGS: dict[str, str | None] = {
    "-optimize": None,
    "-progressive": None,
    "-baseline": None,
    "-fastcrush": None,
    "-notrellis": None,
    "-trellis-dc": None,
    "-notrellis-dc": None,
    "-tune-psnr": None,
    "-tune-hvs-psnr": None,
    "-tune-ssim": None,
    "-tune-ms-ssim": None,
    "-noovershoot": None,
    "-quant-baseline": None,
    "-strict": None,
    "-dc-scan-opt": "[012]",
    "-quant-table": "[0-8]",
    "-dct": "int|fast|float",
    "-restart": "[0-9]+B?",
}
# Why the other cjpeg switches are refused (cjpeg also accepts any unambiguous abbreviation of them).
CJPEG_REFUSED = {
    "-quality": "overrides the quality set by compress.qualities, so files would carry a quality label they do not have",
    "-grayscale": "changes the colour space (real and fake crops must stay colour JPEGs)",
    "-greyscale": "changes the colour space (real and fake crops must stay colour JPEGs)",
    "-rgb": "changes the colour space (RGB instead of YCbCr JPEG)",
    "-sample": "changes the chroma sampling",
    "-qtables": "replaces the quantisation tables that the quality number scales",
    "-qslots": "changes which quantisation table each component uses",
    "-lossless": "changes the output format (lossless JPEG)",
    "-precision": "changes the output format (12/16-bit JPEG)",
    "-arithmetic": "changes the output format (arithmetic coding, unreadable by most decoders)",
    "-scans": "replaces the scan script, i.e. the output format, from a file",
    "-nojfif": "writes a non-standard file without the JFIF marker",
    "-icc": "embeds a colour profile from a file",
    "-smooth": "smooths the pixels before encoding",
    "-revert": "reverts to libjpeg defaults, i.e. no longer MozJPEG's encoder",
    "-targa": "changes the input format (the stage feeds PPM on stdin)",
    "-outfile": "changes where the JPEG goes (the stage reads it from stdout)",
    "-memdst": "changes where the JPEG goes (the stage reads it from stdout)",
    "-version": "prints the version instead of encoding",
    "-report": "is no encoding setting",
    "-verbose": "is no encoding setting",
    "-debug": "is no encoding setting",
    "-maxmemory": "is no encoding setting",
}
_FLAG_HINT = "allowed cjpeg flags: " + ", ".join(f"{f} {v}" if v else f for f, v in CJPEG_FLAGS.items())


def _unknown_flag(i: int, flag: str) -> str:
    """The error line for item `i` of compress.cjpeg_flags, a flag outside the allow-list."""
    word = flag.lstrip("-").lower()
    # cjpeg accepts abbreviations (`-q` is -quality), so an unknown prefix is read as the switch it starts.
    refused = [f for f in CJPEG_REFUSED if word and f[1:].startswith(word)]
    allowed = [f for f in CJPEG_FLAGS if word and f[1:].startswith(word)]
    if not flag.startswith("-"):
        why = "is not a cjpeg flag (a value goes right after the flag that takes it)"
    elif flag in CJPEG_REFUSED:
        why = f"is refused: it {CJPEG_REFUSED[flag]}"
    elif refused:
        why = f"is refused: cjpeg reads it as {refused[0]}, which {CJPEG_REFUSED[refused[0]]}"
    elif allowed:
        why = f"is an abbreviation; write the flag in full ({' or '.join(allowed)})"
    else:
        why = "is not a cjpeg flag this pipeline accepts"
    return f"compress.cjpeg_flags.{i}: {flag!r} {why}; remove it from compress.cjpeg_flags"


def cjpeg_flag_problems(flags: list[str]) -> list[str]:
    """One line per bad item of compress.cjpeg_flags, naming the flag and why it is refused."""
    problems = []
    i = 0
    while i < len(flags):
        flag = str(flags[i])
        value = CJPEG_FLAGS.get(flag, "")
        if flag not in CJPEG_FLAGS:
            problems.append(_unknown_flag(i, flag))
        elif value is not None:
            nxt = str(flags[i + 1]) if i + 1 < len(flags) else None
            if nxt is None or not re.fullmatch(value, nxt):
                problems.append(
                    f"compress.cjpeg_flags.{i}: {flag} must be followed by its value ({value}) as the "
                    f"next item, got {nxt!r}"
                )
            i += 1
        i += 1
    return problems


# The schema's pattern for one cjpeg_flags item: an allowed flag or a value of one (tests check they agree).
CJPEG_ITEM_PATTERN = "^(" + "|".join([*CJPEG_FLAGS, "[0-9]+B?", "int", "fast", "float"]) + ")$"


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
    if list(error.absolute_path)[:2] == ["compress", "cjpeg_flags"] and error.validator == "pattern":
        # The schema's allow-list pattern says nothing useful; say which flag and why.
        return _unknown_flag(error.absolute_path[2], str(error.instance))
    if error.validator == "enum":
        return (
            f"{key}: {error.instance!r} is not allowed; allowed values: {', '.join(map(repr, error.validator_value))}"
        )
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        return f"{key}: {error.message}; allowed keys: {', '.join(allowed)}"
    return f"{key}: {error.message}"


@functools.cache
def _schema() -> dict[str, Any]:
    return yaml.load(SCHEMA_PATH.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _schema_object(section: str) -> dict[str, Any]:
    """The object schema at dotted `section`; a list's items and the object branch of a oneOf are stepped into,
    so "evaluate.test_sources.ganfaces" and "detectors.ela" name the objects inside those lists."""
    node = _schema()
    for key in section.split("."):
        node = node["properties"][key]
        if "properties" not in node and isinstance(node.get("items"), dict):
            node = node["items"]
        if "properties" not in node:
            node = next(branch for branch in node.get("oneOf", []) if "properties" in branch)
    return node


def schema_defaults(section: str) -> dict[str, Any]:
    """The schema's default of every key of `section` that has one, e.g. "train", "demo" or a dotted path into
    lists of objects ("evaluate.test_sources", "evaluate.test_sources.ganfaces", "detectors.ela"): the one place
    defaults are kept, so code that also runs outside the workflow (dfpipe.models.train, the demo source) uses these."""
    props = _schema_object(section)["properties"]
    return {key: copy.deepcopy(sub["default"]) for key, sub in props.items() if "default" in sub}


def _types(schema: dict[str, Any]) -> set[str]:
    """JSON types a (sub)schema allows; from its enum when it has no `type`."""
    kind = schema.get("type")
    if kind is not None:
        return {kind} if isinstance(kind, str) else set(kind)
    if "enum" in schema:  # only whether strings are allowed matters here
        return {"string" if isinstance(v, str) else "null" if v is None else "other" for v in schema["enum"]}
    return set()


def coerce(value: Any, schema: dict[str, Any]) -> Any:
    """`value` with strings read as YAML where `schema` wants no string there.

    Snakemake parses a nested `--config` value with YAML's BaseLoader, so `--config "jpeg={qualities: [95, 50]}"`
    arrives as ["95", "50"]; reading such strings as YAML gives what the same text in config.yaml would."""
    types = _types(schema)
    if isinstance(value, str) and types and "string" not in types:
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            return value  # left as it is: validation then names the key
        if isinstance(value, str) and "number" in types:
            try:  # YAML 1.1 reads "1e-3" as a string; Python's float does not
                value = float(value)
            except ValueError:
                pass
    elif isinstance(value, str) and "null" in types and value in ("null", "~"):
        return None
    if isinstance(value, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        return {k: coerce(v, props.get(k, extra if isinstance(extra, dict) else {})) for k, v in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [coerce(v, schema["items"]) for v in value]
    return value


def validate(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Return a validated copy of `config` with schema defaults filled in; raise ConfigError otherwise.
    Strings where the schema wants a number, list, … (as `--config` passes nested values) are read as YAML."""
    if "jpeg" in config:  # the section's name before it was the compress stage's word everywhere
        _refuse(source, ["jpeg: the section is now `compress` (same keys: qualities, cjpeg_flags); rename it"])
    schema = _schema()
    config = coerce(copy.deepcopy(config), schema)
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        _refuse(source, [_describe(e) for e in errors])
    _check_cross_fields(config, source)
    _check_training(config, source)
    _check_dataset_names(config, source)
    _check_probes(config, source)
    _check_test_settings(config, source)
    problems = cjpeg_flag_problems(config["compress"]["cjpeg_flags"])
    if problems:
        _refuse(source, problems)
    check_paths(config, source)
    check_weight_files(config, source)
    check_model_names(config, source)
    check_test_sources(config, source)
    return config


def _refuse(source: str, problems: list[str]) -> None:
    text = "\n".join(f"  - {p}" for p in problems)
    if any(p.startswith("compress.cjpeg_flags") for p in problems):
        text += f"\n  ({_FLAG_HINT})"
    raise ConfigError(f"{source} is invalid:\n{text}")


def check_paths(config: dict[str, Any], source: str = "config") -> None:
    """Refuse, in one line naming the key, an output_root / results_dir that cannot become a writable folder.

    Nothing is created: the nearest existing ancestor must be a writable folder (not a regular file).
    """
    for key in ("output_root", "results_dir"):
        path = Path(config[key]).expanduser()
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{source}: {key}: {path} is a file, not a folder; set {key} to a folder path")
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise ConfigError(
                f"{source}: {key}: {path} cannot be created because {existing} is a regular file; "
                f"set {key} to a path under a folder"
            )
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(
                f"{source}: {key}: {path} is not writable ({existing} does not allow writing); "
                f"set {key} to a folder you can write to"
            )


WEIGHTS_DOC = "docs/WEIGHTS.md"
# `pretrained:` / probe `weights:` values that name no file
_WEIGHT_WORDS = ("none", "imagenet", "hub")


def weight_files(config: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, path) of every weights file a config names (detectors' `pretrained`, probe backbones' `weights`):
    the values that are neither a word (none, imagenet, hub) nor a URL. Works on a raw config too."""
    entries = [(f"detectors.{i}.pretrained", d.get("pretrained")) for i, d in enumerate(config.get("detectors") or [])]
    for i, entry in enumerate((config.get("probes") or {}).get("backbones") or []):
        if isinstance(entry, dict):
            entries.append((f"probes.backbones.{i}.weights", entry.get("weights")))
    return [
        (key, str(value))
        for key, value in entries
        if value
        and str(value).strip().lower() not in _WEIGHT_WORDS
        and not str(value).startswith(("http://", "https://"))
    ]


def check_weight_files(config: dict[str, Any], source: str = "config") -> None:
    """Refuse, in one line naming the key, a weights file that is not there: found at start-up, not in a training
    job hours later. Relative paths are read from the working directory, as the jobs read them."""
    for key, value in weight_files(config):
        path = Path(value).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"{source}: {key}: weights file {path} does not exist (relative to {Path.cwd()}); "
                f"{WEIGHTS_DOC} says where each official file comes from"
            )


def _closest(name: str, names: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, names, n=5)
    return f"closest: {', '.join(map(repr, close))}" if close else "no name is close"


def _timm_names() -> list[str]:
    return sorted(model_names.timm_models() or ())


def check_model_names(config: dict[str, Any], source: str = "config") -> None:
    """Refuse, one line per key, a model name a job would fail to resolve: a detector's model (registered or a timm
    model), multi_attention's backbone (timm), a probe backbone (dfpipe.evaluation.probes.BACKBONES, or a new name with model
    and weights) and the parts of probe combinations. timm is asked only about names outside dfpipe's own tables
    (dfpipe.model_names), so a config of registered names validates without importing it."""
    problems = []
    for i, spec in enumerate(config["detectors"]):
        model = spec["model"]
        if model not in model_names.DETECTORS and not model_names.is_timm_model(model):
            registered = ", ".join(map(repr, model_names.DETECTORS))
            problems.append(
                f"detectors.{i}.model: {model!r} is not a registered detector ({registered}) and not a timm model; "
                f"{_closest(model, sorted({*model_names.DETECTORS, *_timm_names()}))}"
            )
        if "backbone" not in spec:
            continue
        if model != "multi_attention":
            problems.append(
                f"detectors.{i}.backbone: only model multi_attention takes a backbone; remove it from {spec['name']}"
            )
        elif not model_names.is_timm_model(spec["backbone"]):
            problems.append(
                f"detectors.{i}.backbone: {spec['backbone']!r} is not a timm model; "
                f"{_closest(spec['backbone'], _timm_names())}"
            )
    probes = config.get("probes") or {}
    configured = []
    known = ", ".join(map(repr, model_names.PROBE_BACKBONES))
    for i, entry in enumerate(probes.get("backbones") or []):
        entry = {"name": entry} if isinstance(entry, str) else entry
        name = entry["name"]
        configured.append(name)
        if name not in model_names.PROBE_BACKBONES and not ("model" in entry and "weights" in entry):
            problems.append(
                f"probes.backbones.{i}: {name!r} is not a probe backbone; allowed values: {known}; "
                "a new backbone is an entry {name, model, weights}"
            )
        elif (
            "model" in entry
            and entry.get("kind", model_names.PROBE_BACKBONES.get(name, "timm")) == "timm"
            and not model_names.is_timm_model(entry["model"])
        ):
            problems.append(
                f"probes.backbones.{i}.model: {entry['model']!r} is not a timm model; "
                f"{_closest(entry['model'], _timm_names())}"
            )
    for i, combination in enumerate(probes.get("combinations") or []):
        for part in combination.split("+"):
            if part not in configured:
                problems.append(
                    f"probes.combinations.{i}: {part!r} is not a configured backbone; "
                    f"allowed values: {', '.join(map(repr, configured))}"
                )
    if problems:
        _refuse(source, problems)


def check_test_sources(config: dict[str, Any], source: str = "config") -> None:
    """Refuse, in one line naming the key, an image-folder test source whose root is unset, missing, or holds no
    real/ or fake/ folder: found at start-up, not by its scan job. Relative roots are read from the working
    directory, as the jobs read them. (An ffpp_tree root may be made by the download job, so it is not checked.)"""
    layout = "a folder with real/ and fake/<generator>/"
    for i, entry in enumerate(config["evaluate"].get("test_sources") or []):
        if entry["kind"] != "images":
            continue
        key = f"evaluate.test_sources.{i}.root"
        if not entry.get("root"):
            raise ConfigError(f"{source}: {key} is not set; a test source of kind images needs {layout}")
        root = Path(entry["root"]).expanduser()
        if not root.is_dir():
            what = "is not a folder" if root.exists() else "does not exist"
            raise ConfigError(f"{source}: {key}: {root} {what} (relative to {Path.cwd()}); point it at {layout}")
        missing = [f"{kind}/" for kind in ("real", "fake") if not (root / kind).is_dir()]
        if missing:
            raise ConfigError(
                f"{source}: {key}: {root} has no {' or '.join(missing)} folder; an image-folder dataset keeps "
                "real images under real/ and each generator's under fake/<generator>/"
            )


def _check_cross_fields(config: dict[str, Any], source: str) -> None:
    if config["source"] == "local" and not config["local"]["root"]:
        raise ConfigError(f"{source}: source is 'local' but local.root is not set; point it at an FF++-layout tree")
    if config["source"] == "ffpp" and not config["ffpp"]["accept_tos"]:
        raise ConfigError(
            f"{source}: source is 'ffpp' but ffpp.accept_tos is false; read the FaceForensics++ terms of use "
            "and set ffpp.accept_tos: true to download"
        )
    if config["source"] == "ffpp" and not config["splits"]["dir"]:
        # Checked before anything is downloaded: the servers do not serve the split files.
        raise ConfigError(
            f"{source}: source is 'ffpp' but splits.dir is not set, and the FF++ servers do not serve split files; "
            f"put train.json, val.json and test.json from {SPLITS_URL} in a folder and set splits.dir to it"
        )
    if config["splits"]["dir"]:
        folder = Path(config["splits"]["dir"]).expanduser()
        missing = [f"{s}.json" for s in ("train", "val", "test") if not (folder / f"{s}.json").is_file()]
        if missing:
            raise ConfigError(
                f"{source}: splits.dir: {folder} lacks {', '.join(missing)}; FF++'s split files are in {SPLITS_URL}"
            )
    _check_test_source_splits(config, source)


def _check_test_settings(config: dict[str, Any], source: str) -> None:
    """What the schema cannot say about compress.codecs, compress.platform and perturb (dfpipe.axes)."""
    problems = []
    try:
        axes.configured_settings(config)
    except ValueError as exc:
        problems.append(str(exc))
    for p in config["perturb"]:
        if p["kind"] == "resize" and any(level > 1 for level in p["levels"]):
            problems.append(f"perturb: resize levels are scales in (0, 1]; got {p['levels']}")
    if problems:
        _refuse(source, problems)


def main_tree_root(config: dict[str, Any]) -> Path:
    """The FF++-layout tree the models train on, as `dfpipe.data.sources.prepare` places it (nothing is read)."""
    if config["source"] == "local":
        return Path(config["local"]["root"]).expanduser()
    name = {"ffpp": ("downloads", "ffpp"), "demo": ("sources", "demo")}[config["source"]]
    return Path(config["output_root"]).expanduser().joinpath(*name)


def _check_test_source_splits(config: dict[str, Any], source: str) -> None:
    """Refuse an ffpp_tree test source that reads the training tree's youtube videos without its splits_dir:
    dfpipe.evaluation.test_sources.ffpp_tree would then score every video, training identities included, as unseen test data."""
    main = main_tree_root(config).resolve()
    for entry in config["evaluate"].get("test_sources") or []:
        if entry["kind"] != "ffpp_tree" or entry.get("splits_dir") or not entry.get("root"):
            continue
        if not any(originals_of(m) == ORIGINAL for m in entry.get("methods") or []):
            continue  # DeepFakeDetection alone: its actors' videos are not in the training data
        if Path(entry["root"]).expanduser().resolve() == main:
            splits = config["splits"]["dir"] or main / "splits"
            raise ConfigError(
                f"{source}: evaluate.test_sources[{entry['name']}]: root {entry['root']} is the tree the models "
                f"train on, and without splits_dir its training videos would be scored as unseen; set its "
                f"splits_dir to that tree's split files ({splits}) so only test identities are used"
            )


def _check_training(config: dict[str, Any], source: str) -> None:
    names = [d["name"] for d in config["detectors"]]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: detectors: names must be unique, got {names}")
    qualities = config["compress"]["qualities"]
    if config["train"]["qualities"] is None:
        config["train"]["qualities"] = qualities[:1]
    for q in config["train"]["qualities"]:
        if q not in qualities:
            raise ConfigError(f"{source}: train.qualities: {q} is not one of compress.qualities {qualities}")
    for i, spec in enumerate(config["detectors"]):
        for q in spec.get("train_qualities") or []:
            if q not in qualities:
                raise ConfigError(
                    f"{source}: detectors.{i}.train_qualities: {q} ({spec['name']}) is not one of compress.qualities "
                    f"{qualities}"
                )
    gen = config["train"]["generalization"]
    if gen["quality"] is None:
        gen["quality"] = config["train"]["qualities"][0]
    if gen["quality"] not in qualities:
        raise ConfigError(
            f"{source}: train.generalization.quality: {gen['quality']} is not one of compress.qualities {qualities}"
        )
    for name in gen["detectors"]:
        if name not in names:
            raise ConfigError(
                f"{source}: train.generalization.detectors: {name!r} is not a configured detector; "
                f"allowed values: {', '.join(map(repr, names))}"
            )
    try:  # keys that name detectors or their qualities: one line naming the key, before any job
        check_frame_rate_ablation(config)
        check_tsne(config)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def train_qualities(config: dict[str, Any], spec: dict[str, Any]) -> list[int]:
    """The qualities a detector is trained at: its entry's `train_qualities`, else `train.qualities`."""
    return spec.get("train_qualities") or config["train"]["qualities"]


def check_frame_rate_ablation(config: dict[str, Any]) -> dict[str, Any] | None:
    """evaluate.frame_rate_ablation when it names a detector, else None; ValueError naming the key when that
    detector is not configured or not trained at the ablation's quality (`dfpipe.models.experiments.frame_rate_ablation`
    adds the variant's name)."""
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
    return ablation


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


# The train_dataset name of the probes fitted on every dataset together (dfpipe.evaluation.probes.routing uses it):
# here, so that validate can refuse a test source of that name without importing torch.
UNION = "union"


def _check_dataset_names(config: dict[str, Any], source: str) -> None:
    """Refuse a test source whose name is another's or the main dataset's: the probes job and the cross-dataset
    matrix key datasets by name, so one would silently stand in for the other."""
    seen = {config["source"]: "the main dataset's name (source)"}
    for i, entry in enumerate(config["evaluate"].get("test_sources") or []):
        name = entry["name"]
        if name in seen:
            raise ConfigError(
                f"{source}: evaluate.test_sources.{i}.name: {name!r} is {seen[name]}; give each dataset its own name"
            )
        seen[name] = f"already the name of evaluate.test_sources.{i}"


def _check_probes(config: dict[str, Any], source: str) -> None:
    """Probe settings that must agree with the rest of the config (the names are checked in check_model_names)."""
    probes = config.get("probes")
    if not probes:
        return
    qualities = config["compress"]["qualities"]
    bad = [q for q in probes["train_qualities"] if q not in qualities]
    if bad:
        raise ConfigError(
            f"{source}: probes.train_qualities: {bad} not in compress.qualities {qualities}; add them there or train "
            "the probes at one of those"
        )
    for i, entry in enumerate(config["evaluate"].get("test_sources") or []):
        if entry["name"] == UNION:
            raise ConfigError(
                f"{source}: evaluate.test_sources.{i}.name: {UNION!r} names the probes trained on all datasets "
                "together; rename the test source"
            )


# What the result tables of the `tables` rule depend on: the sections that decide which videos, frames, crops,
# qualities and models make the predictions, and how they are scored. Left out: where outputs go (output_root,
# results_dir), how jobs run (batching), the PSNR/SSIM sample (quality), the sources not in use, and what only
# the test sources and probes read (evaluate.test_sources, probes, ffpp.extra_sets), so adding a test source
# neither reruns the tables nor changes their config hash. Of ffpp, the download settings that leave the videos
# the same (retries, timeout_s) are left out too.
TABLE_SECTIONS = (
    "source",
    "splits",
    "dataset",
    "frames",
    "faces",
    "compress",
    "shards",
    "detectors",
    "train",
    "evaluate",
)
_TABLE_EXCLUDED = {
    "evaluate": ("test_sources", "bpp_points"),
    # the test settings beyond MozJPEG have their own rule (bitrate): adding one does not rerun the tables
    "compress": ("codecs", "platform"),
    "ffpp": ("extra_sets", "retries", "timeout_s"),
}


def tables_config(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a validated config that defines the result tables: `TABLE_SECTIONS` and the section of the
    source in use (demo, local or ffpp), without the keys only test sources use. The tables rule's `config` param
    and the config hash of the tables' provenance."""
    out = {key: config[key] for key in sorted({*TABLE_SECTIONS, config["source"]})}  # sorted: params compare as text
    for section, keys in _TABLE_EXCLUDED.items():
        if section in out:
            out[section] = {k: v for k, v in out[section].items() if k not in keys}
    return copy.deepcopy(out)


def load(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return validate(raw, source=str(path))
