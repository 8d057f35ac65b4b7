"""predict on user files: a model file alone is enough (no config); a real video, an image, and a folder with an
unreadable file and a no-face file give rows and one-line reasons and exit code 1; crops reach the detector
exactly as training shards do; the threshold is the one the trainer chose on validation and stored in the model
file (0.5 for older files without one, said in the output)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from skimage import data
from test_loader import make_shards, videos

from dfpipe.__main__ import main
from dfpipe.apps.predict import (
    FACE_BOUNDS,
    FACE_DEFAULTS,
    crop_faces,
    load_model,
    predict_file,
    prepare,
    run_predict,
    write_model_file,
)
from dfpipe.config import SCHEMA_PATH
from dfpipe.data.compress import decode_rgb, encode
from dfpipe.data.loader import ShardStream, make_loader
from dfpipe.data.manifest import probe
from dfpipe.data.shards import write_split
from dfpipe.evaluation.metrics import choose_threshold
from dfpipe.io import write_json
from dfpipe.models.detectors import create_detector
from dfpipe.models.ela import ELA, error_level
from dfpipe.models.modelfile import ModelFileError
from dfpipe.models.train import train

SIZE = 32  # the models' input size here: small, so the tests stay fast


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A best.pt written by the trainer itself (its format: the detector spec and the validation threshold), in
    the workflow's layout data/models/<detector>/<run>/best.pt."""
    root = tmp_path_factory.mktemp("run")
    train_shards = make_shards(root / "shards", "train", videos(3, 3))
    val_shards = make_shards(root / "shards", "val", videos(2, 2, offset=100), frames=2, n_shards=1, first=100)
    torch.manual_seed(0)
    detector = create_detector("meso4", input_size=SIZE)
    best = train(
        detector,
        train_shards,
        val_shards,
        root / "data" / "models" / "meso_small" / "q77-all",
        {"epochs": 1, "batch_size": 4, "max_steps_per_epoch": 2, "num_workers": 0},
        device="cpu",
        spec={"name": "meso_small", "model": "meso4", "input_size": SIZE},
    )
    assert best.is_file()
    return best


@pytest.fixture(scope="module")
def media(tmp_path_factory, carphone):
    """A folder holding a face photo, a photo without a face, a text file named .mp4 and a video."""
    folder = tmp_path_factory.mktemp("media")
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    Image.fromarray(data.coffee()).save(folder / "coffee.jpg")
    (folder / "notes.mp4").write_text("not a video\n")
    (folder / "clip.mp4").write_bytes(carphone.read_bytes())
    (folder / "readme.txt").write_text("not media: skipped inside folders\n")
    return folder


def test_the_trainers_model_file_alone_is_enough(trained) -> None:
    ckpt = torch.load(trained, map_location="cpu", weights_only=True)
    assert ckpt["spec"] == {"name": "meso_small", "model": "meso4", "input_size": SIZE}
    model = load_model(trained)
    assert model.name == "meso_small" and model.input_size == SIZE and not model.detector.training
    assert model.threshold == ckpt["threshold"] and model.threshold_source == "the model file"
    assert model.threshold_note is None
    for key, value in ckpt["model"].items():
        assert torch.equal(model.detector.state_dict()[key], value)


def test_real_video_frames_scored_and_decided(trained, carphone, tmp_path, capsys) -> None:
    frames, files = run_predict([carphone], trained, tmp_path / "out", frames_per_video=8, device="cpu")
    assert (frames["status"] == "ok").sum() == 8 and frames["frame_index"].tolist() == [7, 22, 37, 52, 67, 82, 97, 112]
    row = files.iloc[0]
    assert row["kind"] == "video" and row["frames_scored"] == 8 and row["status"] == "ok"
    assert row["video_score"] == pytest.approx(frames["score"].mean())
    assert row["threshold"] == load_model(trained).threshold
    assert row["decision"] == ("fake" if row["video_score"] >= row["threshold"] else "real")
    written = pd.read_csv(tmp_path / "out" / "frames.csv")
    assert written["score"].to_numpy() == pytest.approx(frames["score"].to_numpy())
    out = capsys.readouterr().out
    assert f"{carphone}: 8/8 frames scored, score {row['video_score']:.3f} -> {row['decision']}" in out


def test_scores_are_those_of_the_crops_as_training_sees_them(trained, carphone, cjpeg, tmp_path) -> None:
    """A crop re-encoded at q77 by predict reaches the detector byte-identical to the same crop read from a
    q77 training shard (MozJPEG bytes -> loader decode -> loader resize)."""
    model = load_model(trained)
    table = crop_faces(carphone, "video", 120, 2, model.faces)
    crops = [decode_rgb(png) for png in table["crop_png"]]
    rows = [
        {
            "key": "original/000",
            "method": "original",
            "video_id": "000",
            "split": "test",
            "label": 0,
            "frame_index": i,
            "quality": 77,
            "jpeg": encode(c, 77, [], cjpeg),
        }
        for i, c in enumerate(crops)
    ]
    counts = write_split([pd.DataFrame(rows)], 77, "test", 1, tmp_path / "q77")
    write_json(tmp_path / "q77" / "test.counts.json", counts)
    stream = ShardStream([tmp_path / "q77" / "test-0000.tar"], batch_size=2, input_size=SIZE, train=False)
    ((images, _, meta),) = list(make_loader(stream, 0))
    from_shards = images.permute(0, 2, 3, 1).numpy()[np.argsort(meta["frame_index"])]
    ours = np.stack([prepare(c, model, quality=77, cjpeg=cjpeg) for c in crops])
    assert np.array_equal(ours, from_shards)
    # and "as decoded" (no --quality) differs from them: the JPEG step is really skipped
    assert not np.array_equal(np.stack([prepare(c, model) for c in crops]), from_shards)
    # with ELA: the loader's ELA (after decode, before resize) gives predict's ELA crops, byte for byte
    ela = ELA(quality=85, scale=10)
    stream = ShardStream([tmp_path / "q77" / "test-0000.tar"], batch_size=2, input_size=SIZE, train=False, ela=ela)
    ((images, _, meta),) = list(make_loader(stream, 0))
    from_ela_shards = images.permute(0, 2, 3, 1).numpy()[np.argsort(meta["frame_index"])]
    ours = np.stack([prepare(c, replace(model, ela=ela), quality=77, cjpeg=cjpeg) for c in crops])
    assert np.array_equal(ours, from_ela_shards) and not np.array_equal(from_ela_shards, from_shards)


def test_image_is_scored_as_one_frame(trained, media) -> None:
    result = predict_file(media / "astronaut.png", load_model(trained))
    assert result.status == "ok" and result.kind == "image" and len(result.frames) == 1
    assert np.isfinite(result.video_score) and result.frames["score"].iloc[0] == pytest.approx(result.video_score)


def test_folder_with_unreadable_and_faceless_files(trained, media, tmp_path, capsys) -> None:
    code = main(
        [
            "predict",
            str(media),
            "--model",
            str(trained),
            "--out",
            str(tmp_path / "out"),
            "--frames",
            "4",
            "--device",
            "cpu",
        ]
    )
    assert code == 1  # something failed, the rest was scored
    files = pd.read_csv(tmp_path / "out" / "files.csv", keep_default_na=False).set_index("file")
    assert sorted(files.index) == sorted(
        str(media / n) for n in ("astronaut.png", "coffee.jpg", "notes.mp4", "clip.mp4")
    )
    assert files.loc[str(media / "clip.mp4"), "status"] == "ok"
    assert files.loc[str(media / "clip.mp4"), "frames_scored"] == 4
    assert files.loc[str(media / "astronaut.png"), "status"] == "ok"
    assert files.loc[str(media / "notes.mp4"), "status"] == "unreadable"
    assert "moov atom not found" in files.loc[str(media / "notes.mp4"), "reason"]
    assert files.loc[str(media / "coffee.jpg"), "status"] == "no_face"
    assert files.loc[str(media / "coffee.jpg"), "reason"].startswith("no usable face in 1 planned frame")
    frames = pd.read_csv(tmp_path / "out" / "frames.csv")
    assert frames.groupby("file").size().to_dict() == {
        str(media / "astronaut.png"): 1,
        str(media / "clip.mp4"): 4,
        str(media / "coffee.jpg"): 1,
        str(media / "notes.mp4"): 1,
    }
    assert frames.loc[frames["file"] == str(media / "notes.mp4"), "frame_index"].tolist() == [-1]
    out = capsys.readouterr().out.splitlines()
    failed = [line for line in out if "FAILED" in line]
    assert len(failed) == 2 and all("\n" not in line for line in failed)
    assert any(line.startswith(f"{media / 'coffee.jpg'}: FAILED (no_face)") for line in failed)


def test_heatmaps_for_a_video(trained, carphone, tmp_path) -> None:
    _, files = run_predict([carphone], trained, tmp_path, frames_per_video=3, heatmap=True, device="cpu")
    assert files["heatmaps"].tolist() == [f"heatmaps/001-{carphone.name}"]  # named by place in the run
    folder = tmp_path / files["heatmaps"].iloc[0]
    pngs = sorted(folder.glob("f*.png"))
    assert [p.name for p in pngs] == ["f000020.png", "f000060.png", "f000100.png"]
    with Image.open(pngs[0]) as png:
        assert png.size == (2 * SIZE, 2 * SIZE)
    assert probe(folder / "heatmap.mp4")["n_frames"] == 3  # those frames, in order
    # what the run wrote is listed, so that a rerun into this folder can replace it
    listed = (tmp_path / ".predict-outputs.txt").read_text().splitlines()
    assert sorted(listed) == sorted(
        ["frames.csv", "files.csv", *(str(p.relative_to(tmp_path)) for p in folder.iterdir())]
    )


def test_threshold_is_the_trainers_choice_on_validation_and_travels_with_the_file(trained, tmp_path) -> None:
    """The trainer stores the video-level threshold of the best epoch's validation scores (Youden's J, as the
    tables choose it); a copy anywhere decides at it. A file without one decides at 0.5 and says so, even beside
    the workflow's validation predictions."""
    from dfpipe.evaluation.metrics import video_scores
    from dfpipe.evaluation.predict import eval_stream, score

    model = load_model(trained)
    val = sorted((trained.parents[4] / "shards" / "q77").glob("val-*.tar"))
    videos_val = video_scores(score(model.detector, eval_stream(model.detector, val), torch.device("cpu")))
    expected = choose_threshold(videos_val["label"].to_numpy(), videos_val["score"].to_numpy())
    assert model.threshold == pytest.approx(expected, abs=1e-6)
    copy = tmp_path / "copy.pt"
    copy.write_bytes(trained.read_bytes())
    assert load_model(copy).threshold == model.threshold
    # an older file (no threshold) in the workflow's layout, its predictions beside it: 0.5, said
    old = tmp_path / "data" / "models" / "meso_small" / "q77-all" / "best.pt"
    write_model_file(old, model.detector, spec=model.spec)
    pred = tmp_path / "data" / "predictions" / "meso_small" / "q77-all.parquet"
    pred.parent.mkdir(parents=True)
    pred.write_bytes(b"not read")
    older = load_model(old)
    assert older.threshold == 0.5 and older.threshold_note == f"no validation threshold in {old}: deciding at 0.5"
    assert older.threshold_source == f"the default ({older.threshold_note})"
    stamped = write_model_file(tmp_path / "stamped.pt", model.detector, threshold=0.123)
    assert load_model(stamped).threshold == 0.123


def test_spec_and_ela_from_the_model_file(tmp_path) -> None:
    torch.manual_seed(0)
    detector = create_detector("multi_attention", backbone="tf_efficientnet_lite0", input_size=SIZE)
    spec = {
        "name": "mat_lite0",
        "model": "multi_attention",
        "backbone": "tf_efficientnet_lite0",
        "pretrained": "imagenet",
        "input_size": SIZE,
    }
    path = write_model_file(tmp_path / "m.pt", detector, spec=spec, ela=ELA(quality=85, scale=10))
    model = load_model(path)
    assert model.name == "mat_lite0" and model.ela == ELA(85, 10)
    crop = data.astronaut()[100:228, 150:278]
    expected = np.asarray(
        Image.fromarray(np.asarray(error_level(crop, ELA(85, 10)))).resize(
            (SIZE, SIZE), Image.Resampling.BILINEAR, reducing_gap=None
        )
    )
    got = prepare(crop, model)
    assert got.shape == (SIZE, SIZE, 3) and np.abs(got.astype(int) - expected).mean() < 2
    # without the spec, the registered name alone builds the default backbone: a clear refusal, not a crash
    bare = write_model_file(tmp_path / "bare.pt", detector)
    with pytest.raises(ValueError, match=r"bare\.pt: its weights do not fit a 'multi_attention'.*key 'spec'"):
        load_model(bare)


def test_missing_or_foreign_model_file_is_named(tmp_path, media) -> None:
    assert main(["predict", str(media), "--model", str(tmp_path / "none.pt")]) == 2
    bad = tmp_path / "bad.pt"
    bad.write_text(json.dumps({"not": "a model"}))
    with pytest.raises(ModelFileError, match=r"bad.pt: not a readable checkpoint .*; use an intact model file"):
        load_model(bad)
    weights_only = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(1)}, weights_only)
    with pytest.raises(ModelFileError, match=r"weights.pt: not a dfpipe checkpoint \(no model\); use an intact"):
        load_model(weights_only)


def test_the_trainers_model_file_format(trained) -> None:
    """best.pt as the trainer has always written it (through dfpipe.models.modelfile): these keys in this order, so
    files written before and after load alike."""
    ckpt = torch.load(trained, map_location="cpu", weights_only=True)
    assert list(ckpt) == [
        "model",
        "detector",
        "settings",
        "fingerprint",
        "input_size",
        "mean",
        "std",
        "spec",
        "epoch",
        "val_auc",
        "threshold",
    ]
    assert ckpt["detector"] == "meso4" and ckpt["input_size"] == SIZE and ckpt["mean"] == ckpt["std"] == (0.5,) * 3
    assert set(ckpt["fingerprint"]) == {"data", "settings", "detector"} and isinstance(ckpt["threshold"], float)


def test_face_defaults_are_the_schemas() -> None:
    schema = yaml.safe_load(SCHEMA_PATH.read_text())["properties"]["faces"]["properties"]
    assert FACE_DEFAULTS == {k: schema[k]["default"] for k in FACE_DEFAULTS}
    # the bounds a model file's face settings are checked against when it is loaded
    assert {k: (low, high) for k, (low, high, _) in FACE_BOUNDS.items()} == {
        k: (schema[k]["minimum"], schema[k].get("maximum")) for k in FACE_BOUNDS
    }
    assert {k: whole for k, (_, _, whole) in FACE_BOUNDS.items()} == {
        k: schema[k]["type"] == "integer" for k in FACE_BOUNDS
    }


def test_heatmaps_of_a_multi_attention_model_show_its_attention_beside(media, tmp_path) -> None:
    torch.manual_seed(0)
    detector = create_detector("multi_attention", backbone="tf_efficientnet_lite0", input_size=SIZE)
    path = write_model_file(
        tmp_path / "m.pt",
        detector,
        spec={"name": "mat", "model": "multi_attention", "backbone": "tf_efficientnet_lite0", "input_size": SIZE},
    )
    _, files = run_predict([media / "astronaut.png"], path, tmp_path / "out", heatmap=True, device="cpu")
    folder = tmp_path / "out" / files["heatmaps"].iloc[0]
    (png,) = folder.glob("f*.png")
    with Image.open(png) as image:
        assert image.size == (2 * 2 * SIZE, 2 * SIZE)  # Grad-CAM and attention side by side, upscaled ×2
    assert not (folder / "heatmap.mp4").exists()  # an image: no MP4


def test_ela_in_a_detector_spec_reaches_training_evaluation_and_predict(tmp_path, monkeypatch) -> None:
    """`ela: true` in a detector spec is an input setting (not a model argument): the training and validation
    streams apply it, best.pt keeps it in its spec, and predict reads it from the file alone."""
    import dfpipe.models.train as train_module
    from dfpipe.evaluation.predict import eval_stream
    from dfpipe.models.experiments import build_detector

    spec = {"name": "meso_ela", "model": "meso4", "input_size": SIZE, "ela": True}
    torch.manual_seed(0)
    detector = build_detector(spec)
    assert detector.ela == ELA()
    shards = make_shards(tmp_path / "shards", "train", videos(2, 2))
    seen = []
    real = train_module.ShardStream

    def recording(*args, **kwargs):
        stream = real(*args, **kwargs)
        seen.append((stream.train, stream.ela))
        return stream

    monkeypatch.setattr(train_module, "ShardStream", recording)
    best = train(
        detector,
        shards,
        shards,
        tmp_path / "run",
        {"epochs": 1, "batch_size": 4, "max_steps_per_epoch": 1, "num_workers": 0},
        device="cpu",
        spec=spec,
    )
    assert seen == [(True, ELA())] and eval_stream(detector, shards).ela == ELA()
    model = load_model(best)
    assert model.name == "meso_ela" and model.ela == ELA()
    with pytest.raises(ValueError, match=r"ela: 'yes'; give true, false or a mapping"):
        build_detector({**spec, "ela": "yes"})
