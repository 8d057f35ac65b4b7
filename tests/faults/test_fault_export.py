"""Faults met by export and by model files: an --out naming the model itself or a file that is not an export,
model files whose stored settings are damaged, a model file moved away from its run, and an int8 export that
decides otherwise than the model. Each is refused with one line naming the file (and the key or the bound);
nothing already there is overwritten, and the intact input still exports."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from skimage import data
from test_loader import make_shards, videos

from dfpipe.__main__ import main
from dfpipe.apps.export import onnx_metadata, onnx_scores, quantize_int8, to_onnx, torchscript_scores
from dfpipe.apps.predict import load_model, run_predict, write_model_file
from dfpipe.data.loader import make_loader, normalize
from dfpipe.evaluation.metrics import choose_threshold, video_scores
from dfpipe.evaluation.predict import eval_stream, score
from dfpipe.models.detectors import create_detector
from dfpipe.models.experiments import build_detector
from dfpipe.models.train import train

SIZE = 64
SPEC = {"name": "meso_small", "model": "meso4", "input_size": SIZE}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A model file of an older dfpipe: no validation threshold in it."""
    torch.manual_seed(0)
    return write_model_file(
        tmp_path_factory.mktemp("model") / "best.pt",
        create_detector("meso4", input_size=SIZE),
        spec=SPEC,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """best.pt of a tiny Meso4 trained by the trainer, in the workflow's layout: data/models/<detector>/<run>/
    beside data/shards/q77/ (its validation shards)."""
    root = tmp_path_factory.mktemp("run") / "data"
    train_shards = make_shards(root / "shards", "train", videos(3, 3))
    val_shards = make_shards(root / "shards", "val", videos(3, 3, offset=100), n_shards=1, first=100, noise=True)
    torch.manual_seed(0)
    return train(
        build_detector(SPEC),
        train_shards,
        val_shards,
        root / "models" / "meso_small" / "q77-all",
        {"epochs": 1, "batch_size": 4, "max_steps_per_epoch": 2, "num_workers": 0},
        device="cpu",
        spec=SPEC,
    )


def tamper(src: Path, dest: Path, **changes) -> Path:
    """A copy of the model file `src` with some stored values changed, as a damaged or edited file holds them."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    ckpt.update(changes)
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, dest)
    return dest


def leftovers(folder: Path) -> list[Path]:
    return list(folder.glob(".*.part"))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_onto_the_model_file(model, tmp_path, capsys, fmt) -> None:
    """export MODEL --out MODEL: refused naming the path; the model file is untouched and still exports."""
    path = tmp_path / "best.pt"
    shutil.copy(model, path)
    before = path.read_bytes()
    assert main(["export", str(path), "--format", fmt, "--out", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: --out names the model file being exported" in err and len(err.strip().splitlines()) == 1
    assert path.read_bytes() == before and not leftovers(tmp_path)
    assert main(["export", str(path), "--format", fmt]) == 0  # beside it, under the default name
    assert load_model(path).name == "meso_small"


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_onto_a_file_that_is_not_an_export(model, tmp_path, capsys, fmt) -> None:
    """--out names an existing file that is not a dfpipe export: refused naming it, kept; an earlier export is
    replaced."""
    out = tmp_path / ("notes.onnx" if fmt == "onnx" else "notes.pt")
    out.write_text("keep me\n")
    assert main(["export", str(model), "--format", fmt, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out}: exists and is not a dfpipe export" in err and len(err.strip().splitlines()) == 1
    assert out.read_text() == "keep me\n" and not leftovers(tmp_path)
    out.unlink()
    assert main(["export", str(model), "--format", fmt, "--out", str(out)]) == 0
    assert main(["export", str(model), "--format", fmt, "--out", str(out)]) == 0  # our own export: replaced
    x = np.zeros((1, 3, SIZE, SIZE), np.float32)
    meta = onnx_metadata(out) if fmt == "onnx" else torchscript_scores(out, x)[1]
    assert meta["detector"] == "meso_small"


BAD_SETTINGS = [
    ({"threshold": math.nan}, "threshold: nan is not a number in [0, 1]"),
    ({"threshold": "0.7"}, "threshold: '0.7' is not a number in [0, 1]"),
    ({"threshold": 1.5}, "threshold: 1.5 is not a number in [0, 1]"),
    ({"faces": {"margin": 0}}, "faces.margin: 0 is not a number in [1, 3]"),
    ({"faces": {"size": 0}}, "faces.size: 0 is not a whole number in [32, 1024]"),
    ({"faces": {"align": "yes"}}, "faces.align: 'yes' is not true or false"),
    ({"faces": "256"}, "faces: '256' is not a mapping"),
    ({"input_size": 0}, "input_size: 0 is not a whole number in [8, 4096]"),
    ({"std": (0.0, 0.0, 0.0)}, "std: (0.0, 0.0, 0.0) is not 3 numbers > 0"),
    ({"mean": (0.5, math.inf)}, "mean: (0.5, inf) is not 3 finite numbers"),
    ({"ela": {"quality": 0, "scale": 15}}, "ela: ela.quality 0 is out of range; use 1..100"),
]


@pytest.mark.parametrize(("changes", "message"), BAD_SETTINGS, ids=[m.split(":")[0] for _, m in BAD_SETTINGS])
def test_damaged_setting_in_a_model_file(model, tmp_path, changes, message) -> None:
    """A model file whose threshold, face, input or ELA setting is out of range: load_model names the file and key."""
    bad = tamper(model, tmp_path / "model.pt", **({"threshold": 0.5} | changes))
    with pytest.raises(ValueError) as caught:
        load_model(bad)
    assert str(caught.value).startswith(f"{bad}: {message}")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"threshold": math.nan}, "threshold: nan is not"), ({"faces": {"margin": 0}}, "faces.margin: 0 is not")],
)
def test_predict_and_export_with_a_damaged_model_file(model, carphone, tmp_path, capsys, changes, message) -> None:
    """NaN threshold / face margin 0 in the model file: predict and export stop (exit 2) naming file and key, write
    nothing (before: every file 'real' with exit 0, or a division by zero)."""
    bad = tamper(model, tmp_path / "model.pt", **({"threshold": 0.5} | changes))
    out = tmp_path / "out"
    assert main(["predict", str(carphone), "--model", str(bad), "--out", str(out), "--frames", "2"]) == 2
    assert f"{bad}: {message}" in capsys.readouterr().err
    assert not out.exists()
    assert main(["export", str(bad), "--format", "onnx"]) == 2
    assert f"{bad}: {message}" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.onnx")) and not leftovers(tmp_path)


def val_scores(best: Path) -> np.ndarray:
    """Video-level labels and scores of the model on its run's validation shards, as the predict rule gets them."""
    detector = load_model(best).detector
    val = sorted((best.parents[3] / "shards" / "q77").glob("val-*.tar"))
    return video_scores(score(detector, eval_stream(detector, val), torch.device("cpu")))


def test_model_file_moved_away_from_its_run(run, tmp_path) -> None:
    """best.pt copied out of the workflow's tree: it decides at the threshold chosen on validation (in the file,
    and in its ONNX and TorchScript exports), not at 0.5."""
    videos_val = val_scores(run)
    expected = choose_threshold(videos_val["label"].to_numpy(), videos_val["score"].to_numpy())
    moved = tmp_path / "elsewhere" / "detector.pt"
    moved.parent.mkdir()
    shutil.copy(run, moved)
    model = load_model(moved)
    assert model.threshold == pytest.approx(expected, abs=1e-6) and model.threshold != 0.5
    assert model.threshold_source == "the model file"
    assert main(["export", str(moved), "--format", "onnx"]) == 0
    assert main(["export", str(moved), "--format", "torchscript"]) == 0
    assert onnx_metadata(moved.with_suffix(".onnx"))["threshold"] == model.threshold
    x = np.zeros((1, 3, SIZE, SIZE), np.float32)
    assert torchscript_scores(moved.with_name("detector.torchscript.pt"), x)[1]["threshold"] == model.threshold


def test_model_file_without_a_threshold_says_so(model, tmp_path, capsys) -> None:
    """An older model file without a validation threshold: predict and export say it decides at 0.5."""
    line = f"no validation threshold in {model}: deciding at 0.5"
    image = tmp_path / "face.png"
    Image.fromarray(data.astronaut()).save(image)
    said: list[str] = []
    run_predict([image], model, tmp_path / "out", device="cpu", echo=said.append)
    assert line in said[0]
    assert main(["export", str(model), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    assert line in capsys.readouterr().err
    assert onnx_metadata(tmp_path / "m.onnx")["threshold_source"].endswith(f"({line})")


def flipping_copy(best: Path, scratch: Path) -> Path:
    """A copy of the run's best.pt in its run folder whose threshold lies halfway between the float and the int8
    score of the validation crop int8 moves most: at least that crop changes decision."""
    model = load_model(best)
    float_path = to_onnx(model, scratch / "float.onnx")
    int8_path = quantize_int8(float_path, scratch / "int8.onnx")
    val = sorted((best.parents[3] / "shards" / "q77").glob("val-*.tar"))
    images = np.concatenate(
        [
            np.ascontiguousarray(normalize(batch, model.mean, model.std).numpy())
            for batch, _, _ in make_loader(eval_stream(model.detector, val), 0)
        ]
    )
    a, b = onnx_scores(float_path, images), onnx_scores(int8_path, images)
    i = int(np.argmax(np.abs(a - b)))
    assert abs(a[i] - b[i]) > 1e-6  # many float32 steps apart: the midpoint lies strictly between
    return tamper(best, best.with_name("flip.pt"), threshold=float((a[i] + b[i]) / 2))


def test_int8_export_that_flips_decisions(run, tmp_path, capsys) -> None:
    """--int8 whose scores cross the model's threshold on validation crops: the largest score change and the
    flips are reported, and above the bound no int8 file is written unless forced."""
    flip = flipping_copy(run, tmp_path)
    int8 = flip.with_name("flip.int8.onnx")
    assert main(["export", str(flip), "--format", "onnx", "--int8"]) == 2
    err = capsys.readouterr().err
    assert f"{flip}: int8 changes the decision of " in err and "largest score change " in err
    assert "above --int8-max-flip-rate 0.01" in err and "--int8-force" in err
    assert not int8.exists() and flip.with_suffix(".onnx").is_file() and not leftovers(flip.parent)
    # within a bound that allows it, or forced: written, with the same report
    assert main(["export", str(flip), "--format", "onnx", "--int8", "--int8-max-flip-rate", "1"]) == 0
    assert "int8 changes the decision of " in capsys.readouterr().err and int8.is_file()
    int8.unlink()
    assert main(["export", str(flip), "--format", "onnx", "--int8", "--int8-force"]) == 0
    check = json.loads(onnx.load(str(int8)).metadata_props[-1].value)
    assert check["checked"] and check["flips"] >= 1 and check["max_flip_rate"] == 0.01


def test_int8_export_without_validation_crops(model, tmp_path, capsys) -> None:
    """--int8 for a model file given alone (no validation shards reachable): refused, saying so, unless forced."""
    alone = tmp_path / "best.pt"
    shutil.copy(model, alone)
    assert main(["export", str(alone), "--format", "onnx", "--int8"]) == 2
    err = capsys.readouterr().err
    assert f"{alone}: no validation crops to check the int8 file on" in err and "--val-shards" in err
    assert "--int8-force" in err and not (tmp_path / "best.int8.onnx").exists()
    assert main(["export", str(alone), "--format", "onnx", "--int8", "--int8-force"]) == 0
    assert "not checked" in capsys.readouterr().err and (tmp_path / "best.int8.onnx").is_file()
