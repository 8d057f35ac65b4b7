"""Faults met by predict and export on user files and model files: each beside an intact file whose result must
equal a clean run's, and (where a file is the fault) a rerun with the file repaired."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from skimage import data

from dfpipe.__main__ import main
from dfpipe.apps.export import export
from dfpipe.apps.predict import load_model, predict_file, run_predict, write_model_file
from dfpipe.data.manifest import probe
from dfpipe.models.detectors import create_detector
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


# -- the user-facing run: names, reruns, orientation, inputs, arguments, the output place ---------------------
class Overran(Exception):
    """Not an OSError (as TimeoutError is): the CLI reports those as the run's own failure."""


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Raise in the main thread when the block runs longer than `seconds` (a loop that never ends fails)."""

    def stop(*_: object) -> None:
        raise Overran(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def save_face(path: Path, pixels: np.ndarray | None = None, orientation: int = 1) -> Path:
    """A JPEG of the astronaut photo (or `pixels`) as a phone writes it: stored pixels plus an EXIF Orientation."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(data.astronaut()[40:296, 80:336] if pixels is None else pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, quality=95, exif=exif)
    return path


def outputs(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")}


def test_heatmap_names_collide_every_way(model, tmp_path) -> None:
    """Heatmaps of files whose names collide (two folders, a de-duplicated form, case, glob characters): one folder each."""
    # given as folders a, b, c in that order: b/x.jpg meets x.jpg, then x-2.jpg (a's own file) as its renaming
    names = ["a/x-2.jpg", "a/x.jpg", "b/x.jpg", "c/X.jpg", "c/x-1.jpg", "c/[x].jpg", "c/*.jpg"]
    for name in names:
        save_face(tmp_path / name)
    out = tmp_path / "out"
    with deadline(120):
        code = main(
            ["predict", *(str(tmp_path / d) for d in "abc"), "--model", str(model), "--out", str(out), "--heatmap"]
        )
    files = pd.read_csv(out / "files.csv", keep_default_na=False)
    assert code == 0 and sorted(files["file"]) == sorted(str(tmp_path / n) for n in names)
    folders = files["heatmaps"].tolist()
    assert len({f.lower() for f in folders}) == len(names)  # distinct even where case does not count
    for folder in folders:
        assert [p.name for p in (out / folder).iterdir()] == ["f000000.png"]
    assert len(list((out / "heatmaps").iterdir())) == len(names)


def test_second_run_into_a_busy_out_is_refused(model, carphone, clean, tmp_path, capsys) -> None:
    """Second predict into an --out another run is writing: refused naming the folder; the first run's tables whole."""
    out = tmp_path / "out"
    started, go, failed = threading.Event(), threading.Event(), []

    def first_echo(_: str) -> None:
        started.set()
        go.wait(120)

    def first_run() -> None:
        try:
            run_predict([carphone], model, out, frames_per_video=4, device="cpu", echo=first_echo)
        except Exception as err:
            failed.append(err)

    first = threading.Thread(target=first_run)
    first.start()
    try:
        assert started.wait(120)
        code = main(["predict", str(carphone), "--model", str(model), "--out", str(out), "--frames", "2"])
    finally:
        go.set()
        first.join()
    assert not failed and code == 2
    assert f"{out}: another dfpipe predict is writing into this folder" in capsys.readouterr().err
    assert intact(pd.read_csv(out / "frames.csv"), carphone, clean)
    code, _, frames = predict([carphone], model, out)  # the first run over: the folder is free again
    assert code == 0 and intact(frames, carphone, clean)


def test_rerun_into_a_used_out_replaces_its_outputs(model, carphone, tmp_path) -> None:
    """Rerun into a used --out, a clip named with glob characters: the earlier outputs go, the user's files stay."""
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("a.mp4", "[a].mp4"):
        shutil.copy(carphone, clips / name)
    out = tmp_path / "out"
    (out / "heatmaps").mkdir(parents=True)
    (out / "notes.txt").write_text("mine\n")
    (out / "heatmaps" / "mine.png").write_bytes(b"mine")
    args = ["--model", str(model), "--out", str(out), "--heatmap", "--device", "cpu"]
    assert main(["predict", str(clips / "a.mp4"), str(clips / "[a].mp4"), "--frames", "4", *args]) == 0
    for mp4 in out.rglob("heatmap.mp4"):  # each video of its own clip's 4 frames, even for '[a]' (a glob of 'a')
        assert probe(mp4)["n_frames"] == 4
    assert main(["predict", str(clips / "[a].mp4"), "--frames", "3", *args]) == 0
    (mp4,) = out.rglob("heatmap.mp4")
    assert probe(mp4)["n_frames"] == 3
    pngs = sorted(p.name for p in mp4.parent.glob("*.png"))
    assert pngs == ["f000020.png", "f000060.png", "f000100.png"]
    folder = str(mp4.parent.relative_to(out))
    assert outputs(out) == {
        "notes.txt",
        "heatmaps/mine.png",
        "frames.csv",
        "files.csv",
        f"{folder}/heatmap.mp4",
        *(f"{folder}/{p}" for p in pngs),
    }
    assert pd.read_csv(out / "files.csv")["file"].tolist() == [str(clips / "[a].mp4")]


def test_phone_photo_with_exif_orientation(model, tmp_path) -> None:
    """Phone JPEGs stored turned or mirrored with EXIF orientation 2-8: read upright, scored like the upright photo."""
    upright = data.astronaut()[0:320, 60:300]  # portrait, as phones shoot: a turn changes the frame's shape
    # the stored pixels that each orientation turns upright (the inverse of its transform)
    stored = {
        1: upright,
        2: upright[:, ::-1],
        3: upright[::-1, ::-1],
        4: upright[::-1],
        5: upright.transpose(1, 0, 2),
        6: np.rot90(upright, 1),
        7: np.rot90(upright, 2).transpose(1, 0, 2),
        8: np.rot90(upright, -1),
    }
    loaded = load_model(model)
    results = {
        o: predict_file(save_face(tmp_path / f"o{o}.jpg", np.ascontiguousarray(s), o), loaded, keep_inputs=True)
        for o, s in stored.items()
    }
    assert {o: r.reason for o, r in results.items() if r.failed} == {}
    reference = results[1].crops[0].astype(int)
    for result in results.values():
        assert np.abs(result.crops[0].astype(int) - reference).mean() < 4, result.file
        assert abs(result.video_score - results[1].video_score) < 0.02


def test_every_named_input_gets_a_row(model, carphone, tmp_path) -> None:
    """Empty folder, folder without media, GIFs in a folder and by name: a row each; animated GIFs scored as clips."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no media here\n")
    (tmp_path / "gifs").mkdir()
    anim, still = tmp_path / "gifs" / "anim.gif", tmp_path / "still.gif"
    for dest, args in ((anim, ["-t", "1", "-vf", "fps=8"]), (still, ["-frames:v", "1"])):
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(carphone), *args, str(dest)], check=True)
    names = [tmp_path / n for n in ("empty", "notes", "gifs", "still.gif")]
    code, files, _ = predict(names, model, tmp_path / "out")
    rows = files.set_index("file")
    assert sorted(rows.index) == sorted(map(str, [names[0], names[1], anim, still]))
    assert code == 1
    assert rows.loc[str(names[0]), ["status", "reason"]].tolist() == [
        "unreadable",
        "an empty folder (no images or videos)",
    ]
    assert rows.loc[str(names[1]), "reason"] == "a folder with no images or videos (1 other file: readme.txt)"
    assert rows.loc[str(anim), ["kind", "status", "frames_scored"]].tolist() == ["video", "ok", 4]
    assert rows.loc[str(still), ["kind", "status", "frames_scored"]].tolist() == ["image", "ok", 1]


def test_frames_and_threads_must_be_positive(model, carphone, tmp_path, capsys) -> None:
    """--frames or --threads of 0 or below: refused by the argument parser, naming the option; nothing written."""
    for option, value in (("--frames", "0"), ("--frames", "-3"), ("--threads", "0"), ("--threads", "-1")):
        out = tmp_path / f"out{option}{value}"
        with pytest.raises(SystemExit) as stop:
            main(["predict", str(carphone), "--model", str(model), "--out", str(out), option, value])
        assert stop.value.code == 2 and not out.exists()
        assert f"argument {option}: must be a whole number of 1 or more, not '{value}'" in capsys.readouterr().err


def test_out_that_cannot_be_written(model, carphone, tmp_path, capsys) -> None:
    """--out below a file (or in a read-only folder): stopped before any file is scored, naming the path given."""
    blocker = tmp_path / "results.txt"
    blocker.write_text("keep me\n")
    cases = [blocker / "run1"]
    if os.geteuid() != 0:  # root writes into read-only folders
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        cases.append(locked / "run1")
    for out in cases:
        assert main(["predict", str(carphone), "--model", str(model), "--out", str(out), "--frames", "2"]) == 2
        said = capsys.readouterr()
        assert f"dfpipe predict: {out}: cannot write the outputs here" in said.err and ".part" not in said.err
        assert "frames scored" not in said.out
    assert blocker.read_text() == "keep me\n"
