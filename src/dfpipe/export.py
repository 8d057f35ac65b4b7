"""Export a trained model file to ONNX or TorchScript: `python -m dfpipe export MODEL --format onnx|torchscript`.

The exported graph maps a normalised image batch to fake scores and runs without this package:
  input  `image`  float32 N×3×S×S, RGB, (pixel / 255 - mean) / std per channel, S the input size; pixels are
                  the face crop dfpipe's faces stage makes (aligned, margin 1.3), resized to S×S (and, for a
                  model trained with ELA, its ELA image: see `ela` in the metadata)
  output `score`  float32 N, the sigmoid of the fake logit; "fake" when score >= threshold
The preprocessing (input size, mean, std, ELA and face-crop settings) and the validation threshold travel
in the file: ONNX `metadata_props` (one entry per key, JSON values, and `dfpipe` with all of them), and a
TorchScript `_extra_files` entry `dfpipe.json` (`torch.jit.load(path, _extra_files={"dfpipe.json": ""})`).

ONNX goes through torch's TorchScript-based exporter (`dynamo=False`): the torch.export-based one needs the
onnxscript package, which this environment does not carry, and gives the same graph for these CNNs.
`--int8` also writes an int8 dynamic-quantised ONNX variant (onnxruntime.quantization.quantize_dynamic:
int8 weights, activations quantised on the fly), meant for mobile-sized models such as MobileNet.
Parity of each export with PyTorch is checked in tests/test_export.py on real face crops.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .inference import Model, load_model
from .io import atomic_path

FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
OPSET = 17
METADATA_FILE = "dfpipe.json"


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
    import onnx

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


def quantize_int8(onnx_path: Path, out: Path | None = None) -> Path:
    """int8 dynamic-quantised copy of an exported ONNX file (weights int8, activations quantised at run time),
    with the same metadata."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = Path(out) if out is not None else onnx_path.with_name(onnx_path.name.removesuffix(".onnx") + ".int8.onnx")
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
        onnx.save(quantised, str(tmp))
    return out


def export(model_path: Path, fmt: str, out: Path | None = None, int8: bool = False) -> list[Path]:
    """Export the model file `model_path` to `fmt`; returns the files written (the int8 variant last)."""
    if fmt not in FORMATS:
        raise ValueError(f"export format {fmt!r}: use one of {list(FORMATS)}")
    if int8 and fmt != "onnx":
        raise ValueError("--int8 quantises an ONNX export: use it with --format onnx")
    model = load_model(model_path, "cpu")
    model_path = Path(model_path)
    out = Path(out) if out is not None else model_path.with_name(model_path.stem + SUFFIX[fmt])
    written = [to_onnx(model, out) if fmt == "onnx" else to_torchscript(model, out)]
    if int8:
        written.append(quantize_int8(out))
    return written


# -- reading an export back, as a user without dfpipe would ---------------------------------------------------
def onnx_scores(path: Path, images: np.ndarray) -> np.ndarray:
    """Scores of normalised float32 N×3×S×S `images` from an exported ONNX file (onnxruntime, CPU)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["score"], {"image": images.astype(np.float32)})[0]


def onnx_metadata(path: Path) -> dict[str, Any]:
    import onnxruntime as ort

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
