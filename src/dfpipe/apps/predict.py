"""Use a trained detector on one's own files: `python -m dfpipe predict PATH... --model best.pt`.

PATH is a video, an image, or a folder of them. Each file goes through the pipeline's own steps: the frame
plan (`frames.sample_indices`, evenly spaced), one streaming decode and the face crop of the faces stage
(`faces.crop_batch`: mediapipe, alignment, the same sanity checks and reasons), optionally MozJPEG at a
chosen quality (`compress.encode`, the jpeg stage's encoder call), then the loader's decode, resize and the
detector's normalisation. Images are decoded by ffmpeg like a one-frame video and turned upright by their
EXIF orientation, as video frames are by their rotation (`frames.orientation`); an animated GIF is a clip.

Everything comes from the model file (`load_model`, from `dfpipe.models.modelfile`, which reads and writes it): the
detector is rebuilt from the spec it stores (or from its registered name), its input size, mean/std, the ELA
and face-crop settings when recorded, and the decision threshold. The threshold is the one the trainer chose on the validation split (video level, Youden's
J as in the tables) and stored in best.pt, so a copy of the file decides alike wherever it lies; an older file
without one decides at 0.5, and the output says so. Every value read is checked when the file is loaded: a
damaged or edited file is refused naming the file and the key, before any work.

Outputs in `--out`: `frames.csv` (one row per planned frame of every file: status, reason, score),
`files.csv` (one row per input: frames planned and scored, video score, decision, status, reason, heatmap
folder) and with `--heatmap` Grad-CAM overlays `heatmaps/<n>-<file name>/f<index>.png` (n: the input's
place in the run, so names never collide) and `heatmap.mp4` of them for a video. Every input named gets a
row: a file that cannot be read or shows no usable face, and a folder holding no images or videos, get a
one-line reason; the run goes on, and the exit code is 1 when any input failed.

One `--out` holds one run: a run locks it (`.predict.lock`; a second run into it is refused), removes what
the previous run there wrote (listed in `.predict-outputs.txt`; other files are left alone) and lists its
own outputs there before writing them. The folder is checked before any file is scored.
"""

from __future__ import annotations

import fcntl
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ffmpeg
import numpy as np
import pandas as pd
import torch
from PIL import Image
from torchvision.transforms import v2
from tqdm import tqdm

from dfpipe import assets
from dfpipe.data.compress import decode_rgb, encode
from dfpipe.data.faces import crop_batch
from dfpipe.data.frames import sample_indices, video_size
from dfpipe.data.loader import decode_image, normalize
from dfpipe.data.manifest import ffprobe_complaint, probe
from dfpipe.evaluation.predict import pick_device
from dfpipe.io import atomic_path, write_csv
from dfpipe.models.ela import error_level

# The model file's API, also importable from here, where predict's users have always found it.
from dfpipe.models.modelfile import DEFAULT_THRESHOLD as DEFAULT_THRESHOLD
from dfpipe.models.modelfile import FACE_BOUNDS as FACE_BOUNDS
from dfpipe.models.modelfile import FACE_DEFAULTS as FACE_DEFAULTS
from dfpipe.models.modelfile import FROM_FILE as FROM_FILE
from dfpipe.models.modelfile import Model as Model
from dfpipe.models.modelfile import ModelFileError as ModelFileError
from dfpipe.models.modelfile import load_model as load_model
from dfpipe.models.modelfile import write_model_file as write_model_file
from dfpipe.tools import find_cjpeg

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
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
    "heatmaps",
]


# -- preprocessing: as the shards and the loader do it ---------------------------------------------------------
def prepare(
    crop: np.ndarray, model: Model, quality: int | None = None, cjpeg: Path | None = None, name: str = "crop"
) -> np.ndarray:
    """The uint8 H×W×3 input the detector sees for a lossless RGB face crop: MozJPEG at `quality` (when given)
    and the loader's decode, then ELA (when the model was trained on it), then the loader's resize."""
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
    device = next(model.detector.parameters()).device
    out = []
    for start in range(0, len(inputs), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(inputs[start : start + batch_size])).permute(0, 3, 1, 2)
        logits = model.detector(normalize(batch.to(device), model.mean, model.std))
        out.append(torch.sigmoid(logits.float()).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


# -- files ---------------------------------------------------------------------------------------------------
GIF_SUFFIXES = {".gif"}  # one frame: an image; more: a clip
MEDIA_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES | GIF_SUFFIXES


def collect_files(paths: Iterable[Path]) -> list[Path]:
    """Every path named, a folder replaced by the images, videos and GIFs inside it (recursively, sorted). A
    folder holding none of them and a path that does not exist stay as they are, so each gets its row and
    reason."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            media = sorted(
                f
                for f in p.rglob("*")
                if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in MEDIA_SUFFIXES
            )
            out += media or [p]
        else:
            out.append(p)
    return out


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _probe(path: Path) -> tuple[str, int]:
    """("image" or "video", frame count) of a readable file; ValueError with the reason otherwise."""
    if not path.exists():
        raise ValueError("file not found")
    if path.is_dir():
        others = sorted(str(f.relative_to(path)) for f in path.rglob("*") if f.is_file())
        if not others:
            raise ValueError("an empty folder (no images or videos)")
        listed = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise ValueError(
            f"a folder with no images or videos ({len(others)} other file{'s' if len(others) != 1 else ''}: {listed})"
        )
    if path.suffix.lower() in IMAGE_SUFFIXES:
        try:
            video_size(path)  # readable by ffmpeg at all
        except ValueError as err:
            detail = str(err).removeprefix(f"{path}: ").removeprefix("not a readable video ").strip("()")
            raise ValueError(f"not a readable image ({detail})") from err
        return "image", 1
    try:
        if path.suffix.lower() in GIF_SUFFIXES:
            # manifest.probe wants a frame rate, which a still GIF lacks: count its frames alone
            stream = (ffmpeg.probe(str(path), select_streams="v:0", count_packets=None).get("streams") or [{}])[0]
            n_frames = int(stream.get("nb_read_packets") or 0)
            if n_frames < 1:
                raise ValueError("not a readable GIF (no frames)")
            return ("video" if n_frames > 1 else "image"), n_frames
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


def write_heatmaps(
    result: FileResult, model: Model, out_dir: Path, name: str, record: Callable[[Path], Path] | None = None
) -> list[Path]:
    """Grad-CAM overlays of a file's scored frames (`heatmaps/<name>/f<index>.png`, upscaled ×2, the attention
    maps beside them for a multi-attention model) and, for a video with ffmpeg at hand, `heatmap.mp4` of
    exactly those frames. `record(path)` is called before each file is written."""
    # here, not at the top: pytorch-grad-cam loads scikit-learn and scipy (seconds), for --heatmap alone
    from dfpipe.evaluation.gradcam import heatmaps, overlay

    if result.failed or not result.crops:
        return []
    note = record or (lambda path: path)
    ok = result.frames[result.frames["status"] == "ok"]
    inputs = np.stack(result.crops)
    scores = ok["score"].to_numpy(float)
    cams, attention = heatmaps(model.detector, inputs, [s >= model.threshold for s in scores])
    folder = out_dir / "heatmaps" / name
    written, pictures = [], []
    for n, index in enumerate(ok["frame_index"]):
        tiles = [overlay(inputs[n], cams[n])] + ([overlay(inputs[n], attention[n])] if attention is not None else [])
        image = Image.fromarray(np.concatenate(tiles, axis=1))
        image = image.resize((image.width * 2, image.height * 2), Image.Resampling.NEAREST)
        path = note(folder / f"f{int(index):06d}.png")
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG")
        written.append(path)
        pictures.append(np.asarray(image.convert("RGB")))
    if result.kind == "video" and len(pictures) > 1 and shutil.which("ffmpeg"):
        mp4 = note(folder / "heatmap.mp4")
        height, width = pictures[0].shape[:2]
        # the frames go to ffmpeg through a pipe, in order: the video holds these and nothing else in the folder;
        # the scored frames are spread over the clip: shown at 4 per second, not at the clip's rate
        command = ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}"]
        command += ["-framerate", "4", "-i", "pipe:", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "mp4"]
        with atomic_path(mp4) as tmp:
            done = subprocess.run(
                [*command, str(tmp)], input=b"".join(p.tobytes() for p in pictures), stderr=subprocess.PIPE
            )
            if done.returncode:
                said = done.stderr.decode(errors="replace").strip().splitlines()
                raise RuntimeError(f"ffmpeg could not write {mp4}: {said[-1] if said else f'exit {done.returncode}'}")
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


LOCK_NAME = ".predict.lock"
RECORD_NAME = ".predict-outputs.txt"


def _remove_recorded(out_dir: Path) -> None:
    """Delete what the previous run into `out_dir` listed in its record (and the temporary files of those it
    was writing when stopped), then the folders that leaves empty: the user's own files are never listed."""
    record = out_dir / RECORD_NAME
    if not record.is_file():
        return
    written: dict[Path, set[str]] = {}  # folder -> names written there
    for line in record.read_text(errors="replace").splitlines():
        relative = Path(line)
        if not line or relative.is_absolute() or ".." in relative.parts:
            continue  # not written by predict: never follow it out of the folder
        path = out_dir / relative
        if path.is_symlink() or path.is_file():
            path.unlink()
        written.setdefault(path.parent, set()).add(path.name)
    for folder, names in sorted(written.items(), key=lambda item: -len(item[0].parts)):  # deepest first
        if not folder.is_dir():
            continue
        for left in folder.iterdir():  # atomic_path's .<name>.<random>.part of a run that was stopped
            if left.name.endswith(".part") and any(left.name.startswith(f".{name}.") for name in names):
                left.unlink(missing_ok=True)
        while folder != out_dir and out_dir in folder.parents and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent


@contextmanager
def claim_out(out_dir: Path) -> Iterator[Callable[[Path], Path]]:
    """Hold `out_dir` for one run: create it, lock it, remove the previous run's outputs, and yield
    `record(path)`, which lists a file before it is written. ValueError naming the folder when it cannot be
    written or another run holds it. The lock goes with the block (or the process)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: --out must be a folder, and this is a file; pass another --out")
    blocker = next((p for p in out_dir.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ValueError(f"{out_dir}: cannot write the outputs here: {blocker} is a file; pass another --out")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        lock = open(out_dir / LOCK_NAME, "a")  # held open, and locked, for the whole run
    except OSError as err:
        raise ValueError(
            f"{out_dir}: cannot write the outputs here ({err.strerror or err}); pass another --out"
        ) from err
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(
                f"{out_dir}: another dfpipe predict is writing into this folder; wait for it to end or pass another "
                "--out"
            ) from None
        _remove_recorded(out_dir)
        with open(out_dir / RECORD_NAME, "w") as listing:

            def record(path: Path) -> Path:
                listing.write(f"{Path(path).relative_to(out_dir).as_posix()}\n")
                listing.flush()
                return path

            yield record
    finally:
        lock.close()


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
    model = load_model(model_path, pick_device(device))
    if quality is not None and not 1 <= int(quality) <= 100:
        raise ValueError(f"--quality {quality}: use 1..100")
    cjpeg = find_cjpeg() if quality is not None else None
    out_dir = Path(out_dir)
    files = collect_files(paths)
    if not files:
        raise ValueError("no files to predict: pass videos, images or folders holding them")
    # heatmap folders named once, by place in the run: unique whatever the file names are
    width = max(3, len(str(len(files))))
    folders = [f"{n:0{width}d}-{path.name}" for n, path in enumerate(files, 1)]
    with claim_out(out_dir) as record:
        tables = [record(out_dir / "frames.csv"), record(out_dir / "files.csv")]
        say = echo or (lambda line: tqdm.write(line, file=sys.stdout))
        say(
            f"model {model.name} ({model_path}): input {model.input_size} px, threshold {model.threshold:.3f} from "
            f"{model.threshold_source}"
            + (f", ELA q{model.ela.quality}" if model.ela else "")
            + (f", crops re-encoded by MozJPEG at q{quality}" if quality is not None else ", crops scored as decoded")
        )
        frames, rows = [], []
        for path, folder in zip(
            tqdm(files, desc="predict", unit="file", file=sys.stderr, disable=len(files) < 2), folders, strict=True
        ):
            result = predict_file(path, model, frames_per_video, quality, cjpeg, keep_inputs=heatmap, threads=threads)
            drawn = ""
            if heatmap:
                try:
                    if write_heatmaps(result, model, out_dir, folder, record):
                        drawn = f"heatmaps/{folder}"
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
                    "heatmaps": drawn,
                }
            )
        frame_table = pd.concat(frames, ignore_index=True)[FRAME_COLUMNS]
        file_table = pd.DataFrame(rows, columns=FILE_COLUMNS)
        for path, table in zip(tables, (frame_table, file_table), strict=True):
            try:
                write_csv(path, table)
            except OSError as err:  # the temporary file's name would only confuse: name the output
                raise ValueError(
                    f"{path}: could not be written ({err.strerror or err}); fix the folder and rerun"
                ) from err
        failed = int((file_table["status"] != "ok").sum())
        say(
            f"{len(files)} files, {len(files) - failed} scored, {failed} failed; per-frame scores in "
            f"{out_dir / 'frames.csv'}, per file in {out_dir / 'files.csv'}"
        )
        return frame_table, file_table
