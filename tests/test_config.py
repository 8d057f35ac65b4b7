import copy

import pytest
import yaml

from dfpipe import config as dfconfig

REPO_CONFIG = dfconfig.SCHEMA_PATH.parents[2] / "config.yaml"


def test_repository_config_is_valid_and_complete():
    cfg = dfconfig.load(REPO_CONFIG)
    assert cfg["source"] == "demo"
    assert cfg["jpeg"]["qualities"] == [95, 77, 60, 15, 10]
    assert cfg["faces"]["margin"] == 1.3 and cfg["faces"]["size"] == 256
    assert cfg["frames"]["per_method"]["NeuralTextures"] > cfg["frames"]["per_video"]


def test_defaults_fill_an_empty_config():
    cfg = dfconfig.validate({})
    assert cfg["source"] == "demo"
    assert cfg["dataset"]["methods"] == ["Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures"]
    assert cfg["shards"]["per_split"] == {"train": 4, "val": 1, "test": 1}
    assert cfg["batching"]["videos_per_job"] == 50
    assert cfg["quality"]["frames_per_video"] == 8
    assert dfconfig.validate({"quality": {"frames_per_video": None}})["quality"]["frames_per_video"] is None


@pytest.mark.parametrize(
    "patch, words",
    [
        ({"source": "youtube"}, ["source", "'youtube'", "'demo'", "'local'", "'ffpp'"]),
        ({"dataset": {"compression": "c30"}}, ["dataset.compression", "'c30'", "'raw'", "'c23'", "'c40'"]),
        ({"dataset": {"methods": ["DeepFake"]}}, ["dataset.methods.0", "'DeepFake'", "'Deepfakes'"]),
        ({"jpeg": {"qualities": [77, 101]}}, ["jpeg.qualities.1", "101", "maximum"]),
        ({"faces": {"margin": 0.5}}, ["faces.margin", "0.5"]),
        ({"faces": {"marign": 1.3}}, ["faces", "marign", "allowed keys", "margin"]),
        ({"frames": {"per_method": {"NT": 64}}}, ["frames.per_method", "NT"]),
        ({"jpeg": {"cjpeg_flags": ["quality"]}}, ["jpeg.cjpeg_flags.0", "quality"]),
        ({"shards": {"per_split": {"train": 0, "val": 1, "test": 1}}}, ["shards.per_split.train", "0"]),
        ({"quality": {"frames_per_video": 0}}, ["quality.frames_per_video", "0", "minimum"]),
        ({"quality": {"frames_per_video": 2.5}}, ["quality.frames_per_video", "2.5"]),
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
    assert dfconfig.validate({"source": "ffpp", "ffpp": {"accept_tos": True}})["ffpp"]["server"] == "EU2"


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
    with pytest.raises(dfconfig.ConfigError, match="train.qualities: 50 is not one of jpeg.qualities"):
        dfconfig.validate({"train": {"qualities": [50]}})
    with pytest.raises(dfconfig.ConfigError, match="'nope' is not a configured detector"):
        dfconfig.validate({"train": {"generalization": {"detectors": ["nope"]}}})
    with pytest.raises(dfconfig.ConfigError, match="names must be unique"):
        dfconfig.validate({"detectors": [{"name": "a", "model": "meso4"}, {"name": "a", "model": "meso4"}]})
    with pytest.raises(dfconfig.ConfigError, match=r"detectors.0.name"):
        dfconfig.validate({"detectors": [{"name": "a/b", "model": "meso4"}]})
    cfg = dfconfig.validate({"train": {"qualities": [77, 10]}})
    assert cfg["train"]["generalization"]["quality"] == 77


def test_paper_scale_config_is_valid():
    paper = yaml.safe_load((REPO_CONFIG.parent / "configs" / "ffpp-paper.yaml").read_text())
    cfg = dfconfig.validate({**yaml.safe_load(REPO_CONFIG.read_text()), **paper}, source="ffpp-paper.yaml")
    assert cfg["train"]["device"] == "cuda" and "efficientnet_b4" in [d["model"] for d in cfg["detectors"]]
    assert cfg["train"]["qualities"] == cfg["jpeg"]["qualities"]
