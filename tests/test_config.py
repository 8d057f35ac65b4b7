import copy
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from dfpipe import config as dfconfig
from dfpipe.data.compress import encode

REPO_CONFIG = dfconfig.SCHEMA_PATH.parents[2] / "config.yaml"


def test_repository_config_is_valid_and_complete():
    cfg = dfconfig.load(REPO_CONFIG)
    assert cfg["source"] == "demo"
    assert cfg["compress"]["qualities"] == [95, 77, 60, 15, 10]
    assert cfg["faces"]["margin"] == 1.3 and cfg["faces"]["size"] == 256
    assert cfg["frames"]["per_method"]["NeuralTextures"] > cfg["frames"]["per_video"]


def test_defaults_fill_an_empty_config():
    cfg = dfconfig.validate({})
    assert cfg["source"] == "demo"
    assert cfg["dataset"]["methods"] == ["Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures"]
    assert cfg["shards"]["per_split"] == {"train": 4, "val": 1, "test": 1}
    assert cfg["batching"]["videos_per_job"] == 50
    assert cfg["fidelity"]["frames_per_video"] == 8
    assert dfconfig.validate({"fidelity": {"frames_per_video": None}})["fidelity"]["frames_per_video"] is None


@pytest.mark.parametrize(
    "patch, words",
    [
        ({"source": "youtube"}, ["source", "'youtube'", "'demo'", "'local'", "'ffpp'"]),
        ({"dataset": {"compression": "c30"}}, ["dataset.compression", "'c30'", "'raw'", "'c23'", "'c40'"]),
        ({"dataset": {"methods": ["DeepFake"]}}, ["dataset.methods.0", "'DeepFake'", "'Deepfakes'"]),
        ({"compress": {"qualities": [77, 101]}}, ["compress.qualities.1", "101", "maximum"]),
        ({"faces": {"margin": 0.5}}, ["faces.margin", "0.5"]),
        ({"faces": {"marign": 1.3}}, ["faces", "marign", "allowed keys", "margin"]),
        ({"frames": {"per_method": {"NT": 64}}}, ["frames.per_method", "NT"]),
        ({"compress": {"cjpeg_flags": ["quality"]}}, ["compress.cjpeg_flags.0", "quality"]),
        ({"shards": {"per_split": {"train": 0, "val": 1, "test": 1}}}, ["shards.per_split.train", "0"]),
        ({"fidelity": {"frames_per_video": 0}}, ["fidelity.frames_per_video", "0", "minimum"]),
        ({"fidelity": {"frames_per_video": 2.5}}, ["fidelity.frames_per_video", "2.5"]),
    ],
)
def test_bad_values_are_named_with_what_is_allowed(patch, words):
    with pytest.raises(dfconfig.ConfigError) as err:
        dfconfig.validate(patch, source="my.yaml")
    message = str(err.value)
    assert "my.yaml" in message
    for word in words:
        assert word in message, (word, message)


def test_cross_field_rules():
    with pytest.raises(dfconfig.ConfigError, match="local.root"):
        dfconfig.validate({"source": "local"})
    with pytest.raises(dfconfig.ConfigError, match="accept_tos"):
        dfconfig.validate({"source": "ffpp"})
    with pytest.raises(dfconfig.ConfigError, match=r"splits.dir is not set.*dataset/splits"):
        dfconfig.validate({"source": "ffpp", "ffpp": {"accept_tos": True}})


def test_ffpp_tree_source_on_the_training_tree_needs_its_splits(tmp_path, monkeypatch):
    """A test source reading the tree the models train on would score their training videos as unseen."""
    monkeypatch.chdir(tmp_path)
    tree = tmp_path / "ffpp"
    entry = {"name": "fsh", "kind": "ffpp_tree", "root": "ffpp/", "methods": ["FaceShifter", "Deepfakes"]}
    local = {"source": "local", "local": {"root": str(tree)}}
    with pytest.raises(dfconfig.ConfigError) as err:  # the same tree, named by another path
        dfconfig.validate({**local, "evaluate": {"test_sources": [entry]}}, source="my.yaml")
    message = str(err.value)
    assert message.startswith("my.yaml: evaluate.test_sources[fsh]: root ffpp/ is the tree the models train on")
    assert "\n" not in message and f"set its splits_dir to that tree's split files ({tree / 'splits'})" in message
    with_splits = {**entry, "splits_dir": str(tree / "splits")}
    dfconfig.validate({**local, "evaluate": {"test_sources": [with_splits]}})
    other = {**entry, "root": str(tmp_path / "other_tree")}
    dfconfig.validate({**local, "evaluate": {"test_sources": [other]}})
    dfd = {**entry, "methods": ["DeepFakeDetection"]}  # actors' videos: no model trained on them
    dfconfig.validate({**local, "evaluate": {"test_sources": [dfd]}})
    # The demo and download sources' trees lie under output_root.
    demo = {**entry, "root": "out/sources/demo"}
    with pytest.raises(dfconfig.ConfigError, match=r"evaluate.test_sources\[fsh\]: root out/sources/demo"):
        dfconfig.validate({"output_root": "out", "evaluate": {"test_sources": [demo]}})
    assert dfconfig.main_tree_root(dfconfig.validate({"output_root": "out"})) == Path("out/sources/demo")
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}.json").write_text("[]")
    ffpp = {"source": "ffpp", "ffpp": {"accept_tos": True}, "splits": {"dir": str(tmp_path)}, "output_root": "out"}
    downloaded = {**entry, "root": str(tmp_path / "out" / "downloads" / "ffpp")}
    with pytest.raises(dfconfig.ConfigError, match=f"split files \\({re.escape(str(tmp_path))}\\)"):
        dfconfig.validate({**ffpp, "evaluate": {"test_sources": [downloaded]}})


def test_ffpp_needs_split_files_before_anything_is_downloaded(tmp_path):
    ffpp = {"source": "ffpp", "ffpp": {"accept_tos": True}, "splits": {"dir": str(tmp_path)}}
    (tmp_path / "train.json").write_text("[]")
    with pytest.raises(dfconfig.ConfigError) as err:
        dfconfig.validate(ffpp)
    assert f"splits.dir: {tmp_path} lacks val.json, test.json" in str(err.value)
    assert dfconfig.SPLITS_URL in str(err.value)
    for split in ("val", "test"):
        (tmp_path / f"{split}.json").write_text("[]")
    assert dfconfig.validate(ffpp)["ffpp"]["server"] == "EU2"


def test_validate_does_not_modify_its_input(tmp_path):
    raw = {"faces": {"margin": 1.5}}
    before = copy.deepcopy(raw)
    dfconfig.validate(raw)
    assert raw == before
    path = tmp_path / "c.yaml"
    path.write_text("faces: [unclosed")
    with pytest.raises(dfconfig.ConfigError, match="not valid YAML"):
        dfconfig.load(path)
    path.write_text(yaml.safe_dump({"faces": {"size": 128}}))
    assert dfconfig.load(path)["faces"]["size"] == 128


def test_training_settings_must_match_the_data():
    with pytest.raises(dfconfig.ConfigError, match="train.qualities: 50 is not one of compress.qualities"):
        dfconfig.validate({"train": {"qualities": [50]}})
    with pytest.raises(dfconfig.ConfigError, match="'nope' is not a configured detector"):
        dfconfig.validate({"train": {"generalization": {"detectors": ["nope"]}}})
    with pytest.raises(dfconfig.ConfigError, match="names must be unique"):
        dfconfig.validate({"detectors": [{"name": "a", "model": "meso4"}, {"name": "a", "model": "meso4"}]})
    with pytest.raises(dfconfig.ConfigError, match=r"detectors.0.name"):
        dfconfig.validate({"detectors": [{"name": "a/b", "model": "meso4"}]})
    cfg = dfconfig.validate({"train": {"qualities": [77, 10]}})
    assert cfg["train"]["generalization"]["quality"] == 77


@pytest.mark.parametrize(
    "flags, words",
    [
        (
            ["-quality", "-5"],
            ["compress.cjpeg_flags.0", "'-quality' is refused", "compress.qualities", "compress.cjpeg_flags.1", "'-5'"],
        ),
        (["-q", "5"], ["'-q'", "reads it as -quality"]),
        (["--quality", "5"], ["'--quality'", "reads it as -quality"]),
        (["-optimize", "-grayscale"], ["compress.cjpeg_flags.1", "colour space"]),
        (["-rgb"], ["colour space"]),
        (["-sample", "1x1"], ["chroma sampling"]),
        (["-qtables", "t.txt"], ["quantisation tables"]),
        (["-lossless", "1"], ["output format"]),
        (["-arithmetic"], ["output format"]),
        (["-revert"], ["MozJPEG"]),
        (["-outfile", "x.jpg"], ["stdout"]),
        (["-tune"], ["abbreviation", "-tune-psnr"]),
        (["-quant-table"], ["-quant-table must be followed by its value"]),
        (["-quant-table", "9"], ["got '9'"]),
        (["2", "-optimize"], ["compress.cjpeg_flags.0", "'2' is not a cjpeg flag"]),
    ],
)
def test_cjpeg_flags_that_change_quality_colour_sampling_or_format_are_refused(flags, words):
    with pytest.raises(dfconfig.ConfigError) as err:
        dfconfig.validate({"compress": {"cjpeg_flags": flags}}, source="my.yaml")
    message = str(err.value)
    assert "my.yaml" in message
    assert "remove it from compress.cjpeg_flags" in message or "followed by" in message
    assert "allowed cjpeg flags: -optimize" in message
    for word in words:
        assert word in message, (word, message)


def test_schema_pattern_is_the_allow_list_of_config_py():
    schema = yaml.safe_load(dfconfig.SCHEMA_PATH.read_text())
    pattern = schema["properties"]["compress"]["properties"]["cjpeg_flags"]["items"]["pattern"]
    assert pattern == dfconfig.CJPEG_ITEM_PATTERN
    assert not set(dfconfig.CJPEG_FLAGS) & set(dfconfig.CJPEG_REFUSED)


ALLOWED = [
    ["-optimize", "-progressive", "-notrellis", "-noovershoot", "-quant-baseline", "-strict"],
    ["-baseline", "-fastcrush", "-notrellis-dc", "-tune-psnr"],
    ["-trellis-dc", "-tune-ssim"],
    ["-tune-ms-ssim", "-dc-scan-opt", "2", "-quant-table", "2"],
    ["-tune-hvs-psnr", "-dct", "float"],
    ["-restart", "1B", "-dct", "int"],
    ["-restart", "2"],
]


def test_every_allowed_cjpeg_flag_keeps_a_colour_jpeg_at_the_labelled_quality(cjpeg):
    """Each allowed flag runs on the real MozJPEG, and the file stays a 3-component JPEG whose size follows the
    quality (the -quality -5 bug made q95 files smaller than q60 ones)."""
    assert {f for flags in ALLOWED for f in flags if f.startswith("-")} == set(dfconfig.CJPEG_FLAGS)
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for flags in ALLOWED:
        dfconfig.validate({"compress": {"cjpeg_flags": flags}})
        sizes = {q: encode(rgb, q, flags, cjpeg) for q in (95, 60)}
        for data in sizes.values():
            with Image.open(io.BytesIO(data)) as im:
                assert im.mode == "RGB" and im.size == (64, 64), flags
        assert len(sizes[95]) > len(sizes[60]), flags


@pytest.mark.parametrize("key", ["output_root", "results_dir"])
def test_output_folder_below_a_regular_file_is_named_in_one_line(tmp_path, key):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(dfconfig.ConfigError) as err:
        dfconfig.validate({key: str(blocker / "out")}, source="my.yaml")
    assert str(err.value) == (
        f"my.yaml: {key}: {blocker / 'out'} cannot be created because {blocker} is a regular "
        f"file; set {key} to a path under a folder"
    )
    with pytest.raises(dfconfig.ConfigError, match=re.escape(f"{key}: {blocker} is a file, not a folder")):
        dfconfig.validate({key: str(blocker)})
    assert dfconfig.validate({key: str(tmp_path / "a" / "b")})[key] == str(tmp_path / "a" / "b")
    assert not (tmp_path / "a").exists()  # checking creates nothing


# -- cross-field checks that used to run while a rule file was read or when a job ran ---------------------------
GAN_SOURCE = {"name": "gan", "kind": "ganfaces"}


def one_line_error(config: dict) -> str:
    """The message of the ConfigError `config` raises, checked to be one line naming my.yaml."""
    with pytest.raises(dfconfig.ConfigError) as err:
        dfconfig.validate(config, source="my.yaml")
    message = str(err.value)
    assert message.startswith("my.yaml: ") and "\n" not in message, message
    return message


def test_probe_train_qualities_must_be_encoded_qualities():
    message = one_line_error({"compress": {"qualities": [95, 50]}, "probes": {"train_qualities": [95, 77]}})
    assert message.startswith("my.yaml: probes.train_qualities: [77] not in compress.qualities [95, 50]")
    assert dfconfig.validate({"compress": {"qualities": [95, 50]}, "probes": {"train_qualities": [50]}})
    # without probes, no probe setting is checked
    assert dfconfig.validate({"compress": {"qualities": [50]}})["probes"] is None


def test_a_misspelt_probe_backbone_stops_validation_without_importing_torch():
    """The names come from dfpipe.model_names (tests/test_model_names.py ties them to dfpipe.evaluation.probes.BACKBONES), so
    a typo is found at start-up, not by the probes job minutes in, and checking imports neither torch nor timm."""
    with pytest.raises(dfconfig.ConfigError) as err:
        dfconfig.validate({"probes": {"backbones": ["mobilenetv2", "lite_0"]}}, source="my.yaml")
    assert "probes.backbones.1: 'lite_0' is not a probe backbone; allowed values: 'mobilenetv2', 'lite0'" in str(
        err.value
    )
    with pytest.raises(dfconfig.ConfigError, match=r"probes.combinations.0: 'lite0' is not a configured backbone"):
        dfconfig.validate({"probes": {"backbones": ["mobilenetv2"], "combinations": ["mobilenetv2+lite0"]}})
    check = (
        "import json, sys; from dfpipe import config; "
        "config.validate({'probes': {'backbones': ['mobilenetv2', 'lite0', 'clip_vitb16']}}); "
        "print(json.dumps(sorted(m for m in ('torch', 'timm', 'open_clip') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_test_source_names_are_unique_and_not_the_main_datasets():
    twice = {"evaluate": {"test_sources": [GAN_SOURCE, {**GAN_SOURCE}]}}
    assert one_line_error(twice) == (
        "my.yaml: evaluate.test_sources.1.name: 'gan' is already the name of evaluate.test_sources.0; "
        "give each dataset its own name"
    )
    main = {"evaluate": {"test_sources": [{**GAN_SOURCE, "name": "demo"}]}}
    assert "evaluate.test_sources.0.name: 'demo' is the main dataset's name (source)" in one_line_error(main)


def test_union_names_the_probes_of_all_datasets_together():
    union = {"evaluate": {"test_sources": [{**GAN_SOURCE, "name": "union"}]}}
    dfconfig.validate(union)  # no probes: the name is free
    message = one_line_error({**union, "probes": {"backbones": ["lite0"]}})
    assert message.startswith("my.yaml: evaluate.test_sources.0.name: 'union' names the probes trained on all")


def test_rule_files_raise_no_config_errors_of_their_own():
    """Cross-field checks live in dfpipe.config.validate, which common.smk runs first: another rule file raising one
    would stop the dry run outside the one list of config errors."""
    rules = dfconfig.SCHEMA_PATH.parents[1] / "rules"
    raising = [
        f"{path.name}:{n}"
        for path in sorted(rules.glob("*.smk"))
        if path.name != "common.smk"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\braise\b", line)
    ]
    assert not raising, raising


def test_the_old_jpeg_section_is_named_with_its_new_name():
    with pytest.raises(dfconfig.ConfigError, match=r"(?s)my.yaml is invalid.*jpeg: the section is now `compress`"):
        dfconfig.validate({"jpeg": {"qualities": [95]}}, source="my.yaml")
