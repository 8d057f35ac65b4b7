"""Faults met by predict and export on user files and model files: each beside an intact file whose result must
equal a clean run's, and (where a file is the fault) a rerun with the file repaired."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch

from dfpipe.__main__ import main
from dfpipe.detectors import create_detector
from dfpipe.export import export
from dfpipe.inference import load_model, run_predict, write_model_file
from tests.faults.test_fault_training import plant

SIZE = 64


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return write_model_file(
        tmp_path_factory.mktemp("model") / "best.pt",
        create_detector("meso4", input_size=SIZE),
        spec={"name": "meso_small", "model": "meso4", "input_size": SIZE},
        threshold=0.5,
    )


@pytest.fixture(scope="module")
def clean(model, carphone, tmp_path_factory) -> pd.DataFrame:
    """frames.csv of the intact carphone clip alone."""
    out = tmp_path_factory.mktemp("clean")
    run_predict([carphone], model, out, frames_per_video=4, device="cpu", echo=lambda _: None)
    return pd.read_csv(out / "frames.csv")


def predict(paths: list[Path], model: Path, out: Path) -> tuple[int, pd.DataFrame, pd.DataFrame]:
    code = main(
        ["predict", *map(str, paths), "--model", str(model), "--out", str(out), "--frames", "4", "--device", "cpu"]
    )
    return code, pd.read_csv(out / "files.csv", keep_default_na=False), pd.read_csv(out / "frames.csv")


def intact(frames: pd.DataFrame, carphone: Path, clean: pd.DataFrame) -> bool:
    mine = frames[frames["file"] == str(carphone)].reset_index(drop=True)
    return mine[["frame_index", "status", "score"]].equals(clean[["frame_index", "status", "score"]])


def test_zero_byte_video(model, carphone, clean, tmp_path) -> None:
    """Zero-byte video beside a good one: one row 'unreadable' with ffprobe's reason, exit 1; the good one as clean."""
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    code, files, frames = predict([empty, carphone], model, tmp_path / "out")
    assert code == 1
    row = files.set_index("file").loc[str(empty)]
    assert row["status"] == "unreadable" and row["reason"].startswith("not a readable video (")
    assert "\n" not in row["reason"]
    assert intact(frames, carphone, clean)
    empty.write_bytes(carphone.read_bytes())  # repaired: the rerun scores it like the clip itself
    code, files, frames = predict([empty, carphone], model, tmp_path / "out")
    assert code == 0 and (files["status"] == "ok").all()
    assert frames[frames["file"] == str(empty)]["score"].tolist() == clean["score"].tolist()


def test_truncated_video_scores_what_it_holds(model, carphone, clean, tmp_path) -> None:
    """Video cut at 40 % (index up front): frames planned over the packets it still holds and all scored."""
    whole = tmp_path / "whole.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(carphone), "-c", "copy", "-movflags", "+faststart", str(whole)],
        check=True,
    )
    cut = tmp_path / "cut.mp4"
    data = whole.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.4)])
    code, files, frames = predict([cut, carphone], model, tmp_path / "out")
    mine = frames[frames["file"] == str(cut)]
    # the frame count comes from the packets present (as in the manifest), so the plan fits the cut file
    assert (mine["status"] == "ok").all() and len(mine) == 4
    assert mine["frame_index"].max() < 0.5 * 120 < clean["frame_index"].max()
    assert files.set_index("file").loc[str(cut), "status"] == "ok"
    assert code == 0 and intact(frames, carphone, clean)


def test_video_without_a_face(model, carphone, clean, tmp_path) -> None:
    """Video with no face in any frame (a test pattern): 'no_face' with the detector's reason, exit 1."""
    pattern = tmp_path / "pattern.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-t",
            "1",
            "-pix_fmt",
            "yuv420p",
            str(pattern),
        ],
        check=True,
    )
    code, files, frames = predict([pattern, carphone], model, tmp_path / "out")
    row = files.set_index("file").loc[str(pattern)]
    assert code == 1 and row["status"] == "no_face"
    assert row["reason"] == (
        "no usable face in 4 planned frames (no_face 4); e.g. no face detected with confidence >= 0.5"
    )
    assert intact(frames, carphone, clean)


def test_truncated_model_file(model, carphone, tmp_path, capsys) -> None:
    """Model file cut in half: predict and export stop naming it and the fix, write nothing; the intact copy works."""
    cut = tmp_path / "best.pt"
    cut.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    assert main(["predict", str(carphone), "--model", str(cut), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{cut}: not a readable checkpoint" in err and "use an intact model file" in err
    assert not (tmp_path / "out").exists()
    assert main(["export", str(cut), "--format", "onnx"]) == 2
    assert not list(tmp_path.glob("*.onnx"))
    cut.write_bytes(model.read_bytes())
    assert export(cut, "onnx")[0].is_file()


def test_pickle_payload_as_model_file(carphone, tmp_path) -> None:
    """Pickle payload planted as the model file: refused naming the file, its code never runs."""
    path, marker = tmp_path / "best.pt", tmp_path / "pwned"
    plant(path, marker)
    with pytest.raises(ValueError, match=r"best.pt: refused: not a plain checkpoint .*use an intact model file"):
        load_model(path)
    assert not marker.exists()


def test_out_is_a_file(model, carphone, tmp_path, capsys) -> None:
    """--out names an existing file: stopped before any work, naming it; the file is untouched."""
    out = tmp_path / "results"
    out.write_text("keep me\n")
    assert main(["predict", str(carphone), "--model", str(model), "--out", str(out)]) == 2
    assert f"{out}: --out must be a folder" in capsys.readouterr().err
    assert out.read_text() == "keep me\n"
