"""Use a trained detector on one's own files: `python -m dfpipe predict PATH... --model best.pt`.

PATH is a video, an image, or a folder of them. Each file goes through the pipeline's own steps: the frame
plan (`frames.sample_indices`, evenly spaced), one streaming decode and the face crop of the faces stage
(`faces.crop_batch`: mediapipe, alignment, the same sanity checks and reasons), optionally MozJPEG at a
chosen quality (`compress.encode`, the jpeg stage's encoder call), then the loader's decode, resize and the
detector's normalisation. Images are decoded by ffmpeg like a one-frame video (EXIF orientation is not
applied, as in the faces stage).

Everything comes from the model file (`load_model`): the detector is rebuilt from the spec it stores (or
from its registered name), its input size, mean/std, the ELA and face-crop settings when recorded, and the
decision threshold. The threshold chosen on validation is looked up in this order: the model file's
`threshold`; the validation predictions the workflow wrote beside the model
(`<out>/predictions/<detector>/<run>.parquet` for `<out>/models/<detector>/<run>/best.pt`, video level,
Youden's J as in the tables); else 0.5, and the output says which.

Outputs in `--out`: `frames.csv` (one row per planned frame of every file: status, reason, score),
`files.csv` (one row per file: frames planned and scored, video score, decision, status, reason) and with
`--heatmap` Grad-CAM overlays `heatmaps/<file>/f<index>.png` (and `heatmaps/<file>.mp4` for a video). A
file that cannot be read or shows no usable face gets a one-line reason and its rows; the run goes on,
and the exit code is 1 when any file failed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from .ela import ELA, error_level

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
# The faces stage's settings when the model file does not record them: the schema's defaults (a test checks
# they agree with workflow/schemas/config.schema.yaml).
FACE_DEFAULTS = {"size": 256, "margin": 1.3, "align": True, "min_confidence": 0.5, "min_face_size": 32}
DEFAULT_THRESHOLD = 0.5
BANNER = re.compile(r"^(lib[a-z]+ +[0-9.]|ffprobe version|built with|configuration:)")
FRAME_COLUMNS = ["file", "frame_index", "status", "reason", "score"]
FILE_COLUMNS = [
    "file",
    "kind",
    "frames_planned",
    "frames_scored",
    "video_score",
    "threshold",
    "decision",
    "status",
    "reason",
]


# -- the model file ------------------------------------------------------------------------------------------
@dataclass
class Model:
    """A trained detector with everything predict and export need, read from one model file."""

    detector: nn.Module
    path: Path
    name: str
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    threshold: float
    threshold_source: str
    ela: ELA | None = None
    faces: dict[str, Any] = field(default_factory=lambda: dict(FACE_DEFAULTS))
    spec: dict[str, Any] | None = None


def write_model_file(
    path: Path,
    detector: nn.Module,
    spec: dict[str, Any] | None = None,
    threshold: float | None = None,
    ela: ELA | None = None,
    faces: dict[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """A model file in the trainer's best.pt format (model, detector, input_size, mean, std), plus what predict
    reads when present: the detector `spec`, the validation `threshold`, `ela` and `faces` settings."""
    from .io import atomic_path

    obj: dict[str, Any] = {
        "model": {k: v.detach().cpu() for k, v in detector.state_dict().items()},
        "detector": str(getattr(detector, "name", type(detector).__name__)),
        "input_size": int(detector.input_size),
        "mean": tuple(detector.mean),
        "std": tuple(detector.std),
        **extra,
    }
    if spec is not None:
        obj["spec"] = dict(spec)
    if threshold is not None:
        obj["threshold"] = float(threshold)
    if ela is not None:
        obj["ela"] = ela.to_dict()
    if faces is not None:
        obj["faces"] = dict(faces)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def validation_threshold(model_path: Path) -> tuple[float, str] | None:
    """The video-level threshold chosen on the validation predictions the workflow wrote for this model
    (module docstring), with where it came from; None when there are none."""
    from .metrics import _train_methods, choose_threshold, read_predictions, video_scores

    model_path = Path(model_path)
    run, detector, models = model_path.parent, model_path.parent.parent, model_path.parent.parent.parent
    if models.name != "models":
        return None
    table = models.parent / "predictions" / detector.name / f"{run.name}.parquet"
    if not table.is_file():
        return None
    pred = read_predictions([table])
    val = pred[(pred["split"] == "val") & (pred["test_quality"] == pred["train_quality"])]
    if val.empty:
        return None
    val = val[val["method"].isin(_train_methods(str(val["train_methods"].iloc[0])))]
    videos = video_scores(val)
    if videos["label"].nunique() < 2:
        return None
    where = f"validation predictions {detector.name}/{table.name}"
    return choose_threshold(videos["label"].to_numpy(), videos["score"].to_numpy()), where


def _build(ckpt: dict[str, Any], path: Path) -> tuple[nn.Module, dict[str, Any] | None]:
    from .detectors import create_detector
    from .experiments import build_detector

    spec = ckpt.get("spec")
    try:
        if spec is not None:
            # the weights come from the file: never fetch pretrained ones
            return build_detector({**spec, "pretrained": "none"}), spec
        return create_detector(str(ckpt["detector"]), input_size=ckpt.get("input_size")), None
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(
            f"{path}: cannot rebuild its detector {ckpt.get('detector')!r} ({err}); the file needs the "
            f"detector spec it was trained with (key 'spec')"
        ) from err


def load_model(path: Path, device: str | torch.device = "cpu") -> Model:
    """The model of a model file (the trainer's best.pt), in eval mode on `device`. Loaded with
    weights_only=True: a file that would run code to load is refused."""
    from .train import load_checkpoint

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: model file not found; pass a trained model, e.g. data/models/<detector>/<run>/best.pt"
        )
    try:
        ckpt = load_checkpoint(path)
    except ValueError as err:  # the trainer's fix ("delete it to train afresh") is not predict's
        problem = str(err).split("; delete it")[0]
        raise ValueError(
            f"{problem}; use an intact model file (copy best.pt again from its run folder, or retrain that run)"
        ) from err
    detector, spec = _build(ckpt, path)
    try:
        detector.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(
            f"{path}: its weights do not fit a {ckpt.get('detector')!r} built from "
            f"{'its spec' if spec else 'the registered name alone'} ({first}); "
            + (
                ""
                if spec
                else "files without a detector spec (key 'spec') can only be rebuilt with "
                "default model arguments: re-save it with write_model_file(..., spec=...)"
            )
        ) from err
    # what the file records wins over the builder's defaults: it is what the model was trained with
    detector.input_size = int(ckpt.get("input_size", detector.input_size))
    detector.mean = tuple(float(m) for m in ckpt.get("mean", detector.mean))
    detector.std = tuple(float(s) for s in ckpt.get("std", detector.std))
    # crops arrive channels_last (H×W×3 arrays permuted), as the loader's batches do; weights in the same order
    # save the per-layer reorder: measured 1.2-1.7× faster for EfficientNet-Lite0 on CPU
    detector.to(device, memory_format=torch.channels_last).eval()
    if "threshold" in ckpt:
        threshold, source = float(ckpt["threshold"]), "the model file"
    else:
        found = validation_threshold(path)
        threshold, source = found if found else (DEFAULT_THRESHOLD, "default 0.5 (no validation threshold found)")
    ela = ELA.from_dict(ckpt.get("ela") or (spec or {}).get("ela") or (ckpt.get("settings") or {}).get("ela"))
    faces = {**FACE_DEFAULTS, **{k: v for k, v in (ckpt.get("faces") or {}).items() if k in FACE_DEFAULTS}}
    name = str(spec.get("name", ckpt["detector"])) if spec else str(ckpt["detector"])
    return Model(
        detector, path, name, detector.input_size, detector.mean, detector.std, threshold, source, ela, faces, spec
    )


# -- preprocessing: as the shards and the loader do it ---------------------------------------------------------
def prepare(
    crop: np.ndarray, model: Model, quality: int | None = None, cjpeg: Path | None = None, name: str = "crop"
) -> np.ndarray:
    """The uint8 H×W×3 input the detector sees for a lossless RGB face crop: MozJPEG at `quality` (when given)
    and the loader's decode, then ELA (when the model was trained on it), then the loader's resize."""
    from .compress import encode
    from .loader import decode_image

    if quality is not None:
        image = decode_image(encode(crop, quality, [], cjpeg, name))
    else:
        image = Image.fromarray(crop)
    if model.ela is not None:
        image = error_level(image, model.ela)
    size = (model.input_size, model.input_size)
    if image.size != size:
        image = v2.functional.resize(image, list(size))
    return np.asarray(image)


@torch.inference_mode()
def score_inputs(model: Model, inputs: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Sigmoid scores of uint8 N×H×W×3 inputs at the model's input size."""
    from .loader import normalize

    device = next(model.detector.parameters()).device
    out = []
    for start in range(0, len(inputs), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(inputs[start : start + batch_size])).permute(0, 3, 1, 2)
        logits = model.detector(normalize(batch.to(device), model.mean, model.std))
        out.append(torch.sigmoid(logits.float()).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


# -- files ---------------------------------------------------------------------------------------------------
def collect_files(paths: Iterable[Path]) -> list[Path]:
    """Files named, and the images and videos inside folders named (recursively, sorted); a path that does not
    exist is kept, so it gets its row and reason."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(
                f
                for f in p.rglob("*")
                if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
            )
        else:
            out.append(p)
    return out


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _probe(path: Path) -> tuple[str, int]:
    """("image" or "video", frame count) of a readable file; ValueError with the reason otherwise."""
    import ffmpeg

    from .frames import video_size
    from .manifest import ffprobe_complaint, probe

    if not path.exists():
        raise ValueError("file not found")
    if path.is_dir():
        raise ValueError("a folder with no images or videos")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        try:
            video_size(path)  # readable by ffmpeg at all
        except ValueError as err:
            detail = str(err).removeprefix(f"{path}: ").removeprefix("not a readable video ").strip("()")
            raise ValueError(f"not a readable image ({detail})") from err
        return "image", 1
    try:
        return "video", int(probe(path)["n_frames"])
    except ffmpeg.Error as err:
        # ffprobe prints its banner (library versions) before complaining about some files: not a reason
        said = [m for m in ffprobe_complaint(err.stderr, path).split("; ") if m and not BANNER.match(m)]
        raise ValueError(f"not a readable video ({'; '.join(said) or 'ffprobe failed'})") from err


@dataclass
class FileResult:
    file: str
    kind: str
    frames: pd.DataFrame  # FRAME_COLUMNS
    video_score: float
    decision: str  # "fake", "real" or "" when failed
    status: str  # "ok", "unreadable", "no_face", "error"
    reason: str
    crops: list[np.ndarray] = field(default_factory=list)  # model inputs of the scored frames, for heatmaps

    @property
    def failed(self) -> bool:
        return self.status != "ok"


def crop_faces(
    path: Path,
    kind: str,
    n_frames: int,
    frames_per_video: int,
    faces: dict[str, Any],
    threads: int = 1,
) -> pd.DataFrame:
    """The faces stage's table for one file: its planned frames (`frames.sample_indices`), decoded in one
    pass and cropped by `faces.crop_batch` (status, reason and the lossless crop per frame)."""
    from . import assets
    from .faces import crop_batch
    from .frames import sample_indices

    indices = sample_indices(n_frames, 1 if kind == "image" else frames_per_video) or [0]
    key = path.name
    plan = pd.DataFrame(
        {"key": pd.Series([key] * len(indices), dtype="string"), "frame_index": pd.Series(indices, dtype="int64")}
    )
    videos = pd.DataFrame(
        [
            {
                "key": key,
                "method": "user",
                "video_id": path.stem,
                "split": "user",
                "label": 0,
                "path": path.name,
                "mask_path": None,
                "error": None,
            }
        ]
    )
    return crop_batch(
        plan,
        videos,
        path.parent,
        {**faces, "min_faces_per_video": 0},
        assets.face_detector_model(),
        threads=threads,
    )


def predict_file(
    path: Path,
    model: Model,
    frames_per_video: int = 32,
    quality: int | None = None,
    cjpeg: Path | None = None,
    keep_inputs: bool = False,
    threads: int = 1,
) -> FileResult:
    """Score one file (never raises for a bad file: the result's status and reason say what went wrong)."""
    from .compress import decode_rgb

    name = str(path)
    try:
        kind, n_frames = _probe(path)
    except ValueError as err:
        reason = _one_line(err)
        frames = pd.DataFrame(
            [{"file": name, "frame_index": -1, "status": "unreadable", "reason": reason, "score": np.nan}],
            columns=FRAME_COLUMNS,
        )
        return FileResult(name, "unknown", frames, np.nan, "", "unreadable", reason)
    try:
        table = crop_faces(path, kind, n_frames, frames_per_video, model.faces, threads)
        ok = table[table["status"] == "ok"]
        inputs = [
            prepare(decode_rgb(png, f"{name} frame {i}"), model, quality, cjpeg, f"{name} frame {i}")
            for png, i in zip(ok["crop_png"], ok["frame_index"], strict=True)
        ]
        scores = score_inputs(model, np.stack(inputs)) if inputs else np.zeros(0, np.float32)
    except Exception as err:  # a fault in one file must not stop the others; the reason names it
        reason = f"{type(err).__name__}: {_one_line(err)}"
        frames = pd.DataFrame(
            [{"file": name, "frame_index": -1, "status": "error", "reason": reason, "score": np.nan}],
            columns=FRAME_COLUMNS,
        )
        return FileResult(name, kind, frames, np.nan, "", "error", reason)
    frames = pd.DataFrame(
        {
            "file": name,
            "frame_index": table["frame_index"].astype("int64"),
            "status": table["status"].astype(str),
            "reason": table["reason"].astype(object),
            "score": np.nan,
        },
        columns=FRAME_COLUMNS,
    )
    frames.loc[table["status"].to_numpy() == "ok", "score"] = scores
    if not len(scores):
        counts = table["status"].value_counts()
        first = table["reason"].dropna()
        why = f"; e.g. {first.iloc[0]}" if len(first) else ""
        reason = (
            f"no usable face in {len(table)} planned frame{'s' if len(table) != 1 else ''} ("
            + ", ".join(f"{s} {n}" for s, n in counts.items())
            + ")"
            + why
        )
        status = "unreadable" if (table["status"] == "not_decoded").all() else "no_face"
        return FileResult(name, kind, frames, np.nan, "", status, reason)
    video_score = float(np.mean(scores))
    decision = "fake" if video_score >= model.threshold else "real"
    return FileResult(name, kind, frames, video_score, decision, "ok", "", [*inputs] if keep_inputs else [])


def write_heatmaps(result: FileResult, model: Model, out_dir: Path, name: str) -> list[Path]:
    """Grad-CAM overlays of a file's scored frames (`heatmaps/<name>/f<index>.png`, upscaled ×2, the attention
    maps beside them for a multi-attention model) and, for a video with ffmpeg at hand, `heatmap.mp4` of them."""
    from .gradcam import heatmaps, overlay
    from .io import atomic_path

    if result.failed or not result.crops:
        return []
    ok = result.frames[result.frames["status"] == "ok"]
    inputs = np.stack(result.crops)
    scores = ok["score"].to_numpy(float)
    cams, attention = heatmaps(model.detector, inputs, [s >= model.threshold for s in scores])
    folder = out_dir / "heatmaps" / name
    written = []
    for n, index in enumerate(ok["frame_index"]):
        tiles = [overlay(inputs[n], cams[n])] + ([overlay(inputs[n], attention[n])] if attention is not None else [])
        image = Image.fromarray(np.concatenate(tiles, axis=1))
        image = image.resize((image.width * 2, image.height * 2), Image.Resampling.NEAREST)
        path = folder / f"f{int(index):06d}.png"
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG")
        written.append(path)
    if result.kind == "video" and len(written) > 1 and shutil.which("ffmpeg"):
        mp4 = folder / "heatmap.mp4"
        # the scored frames are spread over the clip: show them at ~4 per second, not at the clip's rate
        with atomic_path(mp4) as tmp:
            subprocess.run(
                [
                    "ffmpeg",
                    "-v",
                    "error",
                    "-y",
                    "-framerate",
                    "4",
                    "-pattern_type",
                    "glob",
                    "-i",
                    str(folder / "f*.png"),
                    "-c:v",
                    "libx264",
                    "-pix_fmt",
                    "yuv420p",
                    "-f",
                    "mp4",
                    str(tmp),
                ],
                check=True,
            )
        written.append(mp4)
    return written


def summary_line(result: FileResult, model: Model) -> str:
    if result.failed:
        return f"{result.file}: FAILED ({result.status}): {result.reason}"
    n_ok = int((result.frames["status"] == "ok").sum())
    n = len(result.frames)
    return (
        f"{result.file}: {n_ok}/{n} frames scored, score {result.video_score:.3f} -> {result.decision} "
        f"(threshold {model.threshold:.3f})"
    )


def run_predict(
    paths: Sequence[Path],
    model_path: Path,
    out_dir: Path,
    frames_per_video: int = 32,
    quality: int | None = None,
    heatmap: bool = False,
    device: str = "auto",
    threads: int = 1,
    echo: Callable[[str], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predict every file; write frames.csv and files.csv (and heatmaps) in `out_dir`; return both tables."""
    from tqdm import tqdm

    from .evaluate import pick_device
    from .io import write_csv
    from .tools import find_cjpeg

    model = load_model(model_path, pick_device(device))
    if quality is not None and not 1 <= int(quality) <= 100:
        raise ValueError(f"--quality {quality}: use 1..100")
    cjpeg = find_cjpeg() if quality is not None else None
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: --out must be a folder, and this is a file; pass another --out")
    files = collect_files(paths)
    if not files:
        raise ValueError("no files to predict: pass videos, images or folders holding them")
    say = echo or (lambda line: tqdm.write(line, file=sys.stdout))
    say(
        f"model {model.name} ({model_path}): input {model.input_size} px, threshold {model.threshold:.3f} from "
        f"{model.threshold_source}"
        + (f", ELA q{model.ela.quality}" if model.ela else "")
        + (f", crops re-encoded by MozJPEG at q{quality}" if quality is not None else ", crops scored as decoded")
    )
    frames, rows = [], []
    names: set[str] = set()
    for path in tqdm(files, desc="predict", unit="file", file=sys.stderr, disable=len(files) < 2):
        result = predict_file(path, model, frames_per_video, quality, cjpeg, keep_inputs=heatmap, threads=threads)
        if heatmap:
            name = path.name  # two files of one name (in two folders) get two heatmap folders
            while name in names:
                name = f"{path.stem}-{len(names)}{path.suffix}"
            names.add(name)
            try:
                write_heatmaps(result, model, out_dir, name)
            except Exception as err:  # a heatmap problem is reported, the scores stand
                say(f"{result.file}: heatmaps not written ({type(err).__name__}: {_one_line(err)})")
        say(summary_line(result, model))
        frames.append(result.frames)
        n_ok = int((result.frames["status"] == "ok").sum())
        rows.append(
            {
                "file": result.file,
                "kind": result.kind,
                "frames_planned": int((result.frames["frame_index"] >= 0).sum()),
                "frames_scored": n_ok,
                "video_score": result.video_score,
                "threshold": model.threshold,
                "decision": result.decision,
                "status": result.status,
                "reason": result.reason,
            }
        )
    frame_table = pd.concat(frames, ignore_index=True)[FRAME_COLUMNS]
    file_table = pd.DataFrame(rows, columns=FILE_COLUMNS)
    write_csv(out_dir / "frames.csv", frame_table)
    write_csv(out_dir / "files.csv", file_table)
    failed = int((file_table["status"] != "ok").sum())
    say(
        f"{len(files)} files, {len(files) - failed} scored, {failed} failed; per-frame scores in "
        f"{out_dir / 'frames.csv'}, per file in {out_dir / 'files.csv'}"
    )
    return frame_table, file_table
