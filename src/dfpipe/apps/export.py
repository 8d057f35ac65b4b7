"""Export a trained model file to ONNX or TorchScript: `python -m dfpipe export MODEL --format onnx|torchscript`.

The exported graph maps a normalised image batch to fake scores and runs without this package:
  input  `image`  float32 N×3×S×S, RGB, (pixel / 255 - mean) / std per channel, S the input size; pixels are
                  the face crop dfpipe's faces stage makes (aligned, margin 1.3), resized to S×S (and, for a
                  model trained with ELA, its ELA image: see `ela` in the metadata)
  output `score`  float32 N, the sigmoid of the fake logit; "fake" when score >= threshold
The preprocessing (input size, mean, std, ELA and face-crop settings) and the validation threshold travel
in the file: ONNX `metadata_props` (one entry per key, JSON values, and `dfpipe` with all of them), and a
TorchScript `_extra_files` entry `dfpipe.json` (`torch.jit.load(path, _extra_files={"dfpipe.json": ""})`).
The threshold is the one the trainer chose on validation and stored in the model file; a file without one
(older files) exports 0.5 and export says so.

Exports are written to a temporary file and renamed, so a failed export leaves nothing behind. `--out` never
names the model file itself, nor an existing file other than an earlier export (recognised by the metadata
above): those are refused before any work.

ONNX goes through torch's TorchScript-based exporter (`dynamo=False`): the torch.export-based one needs the
onnxscript package, which this environment does not carry, and gives the same graph for these CNNs.
`--int8` also writes an int8 dynamic-quantised ONNX variant (onnxruntime.quantization.quantize_dynamic:
int8 weights, activations quantised on the fly), meant for mobile-sized models such as MobileNet. Quantising
moves scores (by up to 0.36 on one trained detector), so the variant is checked before it is kept: both files
score the validation crops (the workflow's `<out>/shards/q<Q>/val-*.tar` of the model's run
`<out>/models/<detector>/q<Q>-<methods>/`, or `--val-shards`), and export reports the largest score change and
the crops whose decision flips at the model's threshold. Above `--int8-max-flip-rate` (default
`INT8_MAX_FLIP_RATE`), or with no validation crops to check on, the int8 file is not written unless
`--int8-force` is given; the check's figures travel in its metadata (`int8_check`).
Parity of each export with PyTorch is checked in tests/test_export.py on real face crops.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from torch import nn

from dfpipe.data.loader import make_loader, normalize
from dfpipe.evaluation.predict import eval_stream
from dfpipe.io import atomic_path
from dfpipe.models.modelfile import Model, load_model

FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
OPSET = 17
METADATA_FILE = "dfpipe.json"
# At most 1 in 100 validation crops may change decision in the int8 file: rounding moves every score a little,
# so crops lying right at the threshold flip; more than that and the int8 file no longer decides as the model.
INT8_MAX_FLIP_RATE = 0.01


class ExportError(RuntimeError):
    """A detector cannot be written in a format; the message names the model, the format and the cause."""


class Scorer(nn.Module):
    """detector -> sigmoid score: what the exported file computes."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.detector(image).float())


def metadata(model: Model) -> dict[str, Any]:
    """What a user of the exported file needs besides the graph (module docstring)."""
    return {
        "format": "dfpipe-detector/1",
        "detector": model.name,
        "input_size": model.input_size,
        "mean": list(model.mean),
        "std": list(model.std),
        "threshold": model.threshold,
        "threshold_source": model.threshold_source,
        "ela": model.ela.to_dict() if model.ela else None,
        "faces": model.faces,
        "input": "image: float32 N×3×S×S RGB face crops resized to S×S, (pixel/255 - mean)/std per channel",
        "output": "score: float32 N, sigmoid of the fake logit; fake when score >= threshold",
    }


def _example(model: Model, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, model.input_size, model.input_size, generator=torch.Generator().manual_seed(0))


def _fail(model: Model, fmt: str, err: BaseException) -> ExportError:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    other = "torchscript" if fmt == "onnx" else "onnx"
    return ExportError(
        f"{model.path}: {model.name} cannot be exported to {fmt} ({type(err).__name__}: {first}); "
        f"try --format {other}, or use the model file with `python -m dfpipe predict`"
    )


def to_onnx(model: Model, out: Path) -> Path:
    scorer = Scorer(model.detector).eval()
    with atomic_path(out) as tmp:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
                torch.onnx.export(
                    scorer,
                    (_example(model),),
                    str(tmp),
                    input_names=["image"],
                    output_names=["score"],
                    dynamic_axes={"image": {0: "batch"}, "score": {0: "batch"}},
                    opset_version=OPSET,
                    dynamo=False,
                )
        except Exception as err:  # exporter errors have no common base class
            raise _fail(model, "onnx", err) from err
        graph = onnx.load(str(tmp))
        meta = metadata(model)
        entries = {k: json.dumps(v) for k, v in meta.items()} | {"dfpipe": json.dumps(meta)}
        del graph.metadata_props[:]
        for key, value in entries.items():
            graph.metadata_props.add(key=key, value=value)
        onnx.save(graph, str(tmp))
    return out


def to_torchscript(model: Model, out: Path) -> Path:
    scorer = Scorer(model.detector).eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice
            traced = torch.jit.trace(scorer, _example(model), check_trace=False)
    except Exception as err:
        raise _fail(model, "torchscript", err) from err
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(traced, str(tmp), _extra_files={METADATA_FILE: json.dumps(metadata(model))})
    return out


def quantize_int8(onnx_path: Path, out: Path | None = None, check: Int8Check | None = None) -> Path:
    """int8 dynamic-quantised copy of an exported ONNX file (weights int8, activations quantised at run time),
    with the same metadata. With `check`, it is run on the quantised temporary file before the rename: it
    raises to refuse (nothing is written) or returns figures recorded as the `int8_check` metadata entry."""
    out = Path(out) if out is not None else int8_path(onnx_path)
    root = logging.getLogger()
    level = root.level
    with atomic_path(out) as tmp:
        root.setLevel(logging.ERROR)  # its advice to run onnxruntime's pre-processing: measured, it changed nothing
        try:
            quantize_dynamic(str(onnx_path), str(tmp), weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        quantised = onnx.load(str(tmp))
        del quantised.metadata_props[:]
        for prop in onnx.load(str(onnx_path)).metadata_props:
            quantised.metadata_props.add(key=prop.key, value=prop.value)
        quantised.metadata_props.add(key="quantization", value=json.dumps("int8 dynamic (onnxruntime)"))
        if check is not None:
            onnx.save(quantised, str(tmp))
            quantised.metadata_props.add(key="int8_check", value=json.dumps(check(tmp)))
        onnx.save(quantised, str(tmp))
    return out


def int8_path(onnx_path: Path) -> Path:
    """Where `--int8` writes the quantised variant of `onnx_path`."""
    return onnx_path.with_name(onnx_path.name.removesuffix(".onnx") + ".int8.onnx")


# -- where an export may go --------------------------------------------------------------------------------------
def is_export(path: Path) -> bool:
    """Whether `path` is a file this module wrote: a TorchScript archive holding `dfpipe.json`, or an ONNX file
    whose `dfpipe` metadata entry names our format. Read as data: nothing in the file runs."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith(f"/extra/{METADATA_FILE}") for name in archive.namelist())
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception:  # protobuf's decode errors share no public base class
        return False
    entry = next((p.value for p in graph.metadata_props if p.key == "dfpipe"), None)
    try:
        return entry is not None and str(json.loads(entry).get("format", "")).startswith("dfpipe-detector/")
    except (ValueError, AttributeError):
        return False


def check_out(model_path: Path, out: Path) -> None:
    """Refuse an output path naming the model file, a folder, or an existing file that is not an export."""
    out = Path(out)
    if not out.exists():
        return
    if out.is_dir():
        raise ValueError(f"{out}: --out names a folder; pass a file name, e.g. {out / (model_path.stem + '.onnx')}")
    if os.path.samefile(out, model_path):
        raise ValueError(
            f"{out}: --out names the model file being exported, and an export never replaces its input; "
            f"pass another --out, e.g. {model_path.with_name(model_path.stem + '.onnx')}"
        )
    if not is_export(out):
        raise ValueError(
            f"{out}: exists and is not a dfpipe export, and export replaces only its own earlier exports; "
            f"remove the file or pass another --out"
        )


# -- the int8 check --------------------------------------------------------------------------------------------
@dataclass
class Int8Report:
    """How the int8 file scores the validation crops, against the float export."""

    crops: int
    flips: int  # crops decided otherwise at the model's threshold
    max_score_change: float
    threshold: float

    @property
    def flip_rate(self) -> float:
        return self.flips / self.crops

    def line(self, model_path: Path) -> str:
        return (
            f"{model_path}: int8 changes the decision of {self.flips} of {self.crops} validation crops "
            f"({100 * self.flip_rate:.1f}%) at threshold {self.threshold:.3f}; largest score change "
            f"{self.max_score_change:.3f}"
        )


Int8Check = Callable[[Path], dict[str, Any]]


def val_shards_of(model_path: Path) -> list[Path]:
    """The validation shards of the run a model file lies in, in the workflow's layout
    (`<out>/models/<detector>/q<Q>-<methods>/<file>` -> `<out>/shards/q<Q>/val-*.tar`); [] elsewhere."""
    run = Path(os.path.abspath(model_path)).parent
    quality = re.fullmatch(r"q(\d+)-.+", run.name)
    if quality is None or run.parent.parent.name != "models":
        return []
    return sorted((run.parent.parent.parent / "shards" / f"q{quality[1]}").glob("val-*.tar"))


def expand_shards(paths: Sequence[Path]) -> list[Path]:
    """--val-shards: tar files, or folders whose val-*.tar are taken."""
    shards: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(path.glob("val-*.tar"))
            if not found:
                raise ValueError(f"{path}: --val-shards folder holds no val-*.tar; pass a quality's shards folder")
            shards += found
        elif path.is_file():
            shards.append(path)
        else:
            raise FileNotFoundError(f"{path}: --val-shards: no such file or folder")
    return shards


def int8_report(model: Model, float_path: Path, int8_file: Path, shards: Sequence[Path]) -> Int8Report:
    """Scores of every crop of `shards` (the evaluation loader: decode, ELA when the model has it, resize,
    normalisation) by the float and the int8 ONNX file, compared at the model's threshold."""
    model.detector.ela = model.ela  # the stream applies it (files without a spec carry it on their own)
    runs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (float_path, int8_file)]
    before, after = [], []
    for batch, _, _ in make_loader(eval_stream(model.detector, shards, 64), 0):
        x = np.ascontiguousarray(normalize(batch, model.mean, model.std).numpy(), dtype=np.float32)
        before.append(runs[0].run(["score"], {"image": x})[0])
        after.append(runs[1].run(["score"], {"image": x})[0])
    if not before:
        raise ValueError(f"{', '.join(map(str, shards))}: no crops to check the int8 file on")
    a, b = np.concatenate(before), np.concatenate(after)
    flips = int(((a >= model.threshold) != (b >= model.threshold)).sum())
    return Int8Report(len(a), flips, float(np.abs(a - b).max()), model.threshold)


def int8_check(
    model: Model,
    float_path: Path,
    val_shards: Sequence[Path] | None,
    max_flip_rate: float,
    force: bool,
    say: Callable[[str], None],
) -> Int8Check:
    """The check quantize_int8 runs on its temporary file (module docstring). Without validation crops it fails
    here, before any export is written, unless `force`."""
    shards = expand_shards(val_shards) if val_shards else val_shards_of(model.path)
    if not shards and not force:
        raise ValueError(
            f"{model.path}: no validation crops to check the int8 file on (the model is not in a workflow run "
            f"folder beside <out>/shards/q<Q>/val-*.tar); pass --val-shards, or --int8-force to write it unchecked"
        )

    def check(int8_file: Path) -> dict[str, Any]:
        if not shards:
            say(f"{model.path}: int8 file not checked on validation crops (none given; --int8-force)")
            return {"checked": False}
        report = int8_report(model, float_path, int8_file, shards)
        if report.flip_rate > max_flip_rate and not force:
            raise ValueError(
                f"{report.line(model.path)}: above --int8-max-flip-rate {max_flip_rate:g}, so no int8 file is "
                f"written; use the float export, or pass --int8-force to write it anyway"
            )
        say(report.line(model.path))
        return {"checked": True, **asdict(report), "max_flip_rate": max_flip_rate}

    return check


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def export(
    model_path: Path,
    fmt: str,
    out: Path | None = None,
    int8: bool = False,
    val_shards: Sequence[Path] | None = None,
    int8_max_flip_rate: float = INT8_MAX_FLIP_RATE,
    int8_force: bool = False,
    say: Callable[[str], None] = _stderr,
) -> list[Path]:
    """Export the model file `model_path` to `fmt`; returns the files written (the int8 variant last). What the
    user should know (no validation threshold in the file; the int8 check) goes to `say`."""
    if fmt not in FORMATS:
        raise ValueError(f"export format {fmt!r}: use one of {list(FORMATS)}")
    if int8 and fmt != "onnx":
        raise ValueError("--int8 quantises an ONNX export: use it with --format onnx")
    if not 0 <= int8_max_flip_rate <= 1:
        raise ValueError(f"--int8-max-flip-rate {int8_max_flip_rate}: give a fraction in [0, 1], e.g. 0.01")
    model = load_model(model_path, "cpu")
    model_path = Path(model_path)
    out = Path(out) if out is not None else model_path.with_name(model_path.stem + SUFFIX[fmt])
    for path in [out, int8_path(out)] if int8 else [out]:
        check_out(model_path, path)
    check = int8_check(model, out, val_shards, int8_max_flip_rate, int8_force, say) if int8 else None
    if model.threshold_note:
        say(model.threshold_note)
    written = [to_onnx(model, out) if fmt == "onnx" else to_torchscript(model, out)]
    if int8:
        written.append(quantize_int8(out, check=check))
    return written


# -- reading an export back, as a user without dfpipe would ---------------------------------------------------
def onnx_scores(path: Path, images: np.ndarray) -> np.ndarray:
    """Scores of normalised float32 N×3×S×S `images` from an exported ONNX file (onnxruntime, CPU)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["score"], {"image": images.astype(np.float32)})[0]


def onnx_metadata(path: Path) -> dict[str, Any]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return json.loads(session.get_modelmeta().custom_metadata_map["dfpipe"])


def torchscript_scores(path: Path, images: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Scores from an exported TorchScript file (torch.jit.load) and its metadata."""
    extra = {METADATA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    with torch.no_grad():
        scores = module(torch.from_numpy(images.astype(np.float32))).numpy()
    return scores, json.loads(extra[METADATA_FILE])
