"""Export: every registered detector written to ONNX and TorchScript gives PyTorch's scores on real face crops
(ONNX within 1e-4, TorchScript within 1e-5), carries its preprocessing and threshold, and runs without dfpipe;
an int8 dynamic-quantised MobileNet stays within 0.1 (how int8 is checked on validation crops and bounded:
tests/faults/test_fault_export.py); a detector that cannot export says so clearly."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from dfpipe.__main__ import main
from dfpipe.apps.export import (
    INT8_MAX_FLIP_RATE,
    ExportError,
    export,
    is_export,
    onnx_metadata,
    onnx_scores,
    quantize_int8,
    to_onnx,
    torchscript_scores,
)
from dfpipe.apps.predict import FACE_DEFAULTS, Model, crop_faces, load_model, prepare, write_model_file
from dfpipe.data.compress import decode_rgb
from dfpipe.data.loader import normalize
from dfpipe.models.detectors import create_detector, list_detectors
from dfpipe.models.detectors.base import HALF, Detector

SIZE = 64
ONNX_TOLERANCE = 1e-4  # float32 graphs: measured differences are ~1e-6; kernels differ in summation order
TORCHSCRIPT_TOLERANCE = 1e-5  # the same kernels as eager PyTorch
INT8_TOLERANCE = 0.1  # int8 weights and activations move scores by a few hundredths here


@pytest.fixture(scope="module")
def crops(carphone) -> list[np.ndarray]:
    """Four lossless face crops of the carphone clip, cut by the faces stage."""
    table = crop_faces(carphone, "video", 120, 4, FACE_DEFAULTS)
    assert (table["status"] == "ok").all()
    return [decode_rgb(png) for png in table["crop_png"]]


def model_file(tmp_path, name: str, **kwargs) -> tuple[Model, np.ndarray]:
    torch.manual_seed(0)
    detector = create_detector(name, input_size=SIZE, **kwargs)
    spec = {"name": f"{name}_test", "model": name, "pretrained": "none", "input_size": SIZE, **kwargs}
    path = write_model_file(tmp_path / "best.pt", detector, spec=spec, threshold=0.42)
    return load_model(path), path


def inputs(model: Model, crops: list[np.ndarray]) -> np.ndarray:
    batch = torch.from_numpy(np.stack([prepare(c, model) for c in crops])).permute(0, 3, 1, 2)
    return normalize(batch, model.mean, model.std).numpy()


def reference(model: Model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(model.detector(torch.from_numpy(x)).float()).numpy()


# multi_attention on the demo's EfficientNet-Lite0 backbone: its B4 default costs 40 s more to export on 2 cores
# and B4 itself is exported as efficientnet_b4
BUILD_ARGS = {"multi_attention": {"backbone": "tf_efficientnet_lite0"}}


@pytest.mark.parametrize("name", list_detectors())
def test_every_registered_detector_exports_with_parity(name, crops, tmp_path) -> None:
    model, path = model_file(tmp_path, name, **BUILD_ARGS.get(name, {}))
    x = inputs(model, crops)
    expected = reference(model, x)
    (onnx_path,) = export(path, "onnx")
    assert onnx_path == tmp_path / "best.onnx"
    assert np.abs(onnx_scores(onnx_path, x) - expected).max() <= ONNX_TOLERANCE
    meta = onnx_metadata(onnx_path)
    assert meta["input_size"] == SIZE and meta["mean"] == list(model.mean) and meta["std"] == list(model.std)
    assert meta["threshold"] == 0.42 and meta["detector"] == f"{name}_test"
    (ts_path,) = export(path, "torchscript")
    scores, ts_meta = torchscript_scores(ts_path, x)
    assert np.abs(scores - expected).max() <= TORCHSCRIPT_TOLERANCE
    assert ts_meta == meta
    # another batch size than the one traced/exported with
    assert np.abs(onnx_scores(onnx_path, x[:1]) - expected[:1]).max() <= ONNX_TOLERANCE
    assert np.abs(torchscript_scores(ts_path, x[:3])[0] - expected[:3]).max() <= TORCHSCRIPT_TOLERANCE


def test_int8_mobilenet_is_smaller_and_close(crops, tmp_path, capsys) -> None:
    model, path = model_file(tmp_path, "mobilenet_v2")
    x = inputs(model, crops)
    # no validation shards beside a file given alone: the check is skipped only when forced (test_fault_export)
    assert main(["export", str(path), "--format", "onnx", "--int8", "--int8-force"]) == 0
    assert "int8 file not checked" in capsys.readouterr().err
    float_path, int8_path = tmp_path / "best.onnx", tmp_path / "best.int8.onnx"
    assert int8_path.stat().st_size < 0.5 * float_path.stat().st_size
    assert np.abs(onnx_scores(int8_path, x) - reference(model, x)).max() <= INT8_TOLERANCE
    meta = onnx_metadata(int8_path)
    assert meta == onnx_metadata(float_path)
    assert is_export(int8_path) and is_export(float_path) and not is_export(path)  # best.pt is a zip too
    assert quantize_int8(float_path, tmp_path / "again.onnx").is_file()


def test_exported_files_run_without_dfpipe(crops, tmp_path) -> None:
    model, path = model_file(tmp_path, "meso4")
    x = inputs(model, crops)
    np.save(tmp_path / "x.npy", x)
    export(path, "onnx")
    export(path, "torchscript")
    script = f"""
import json, sys
import numpy as np, onnxruntime as ort, torch
x = np.load({str(tmp_path / "x.npy")!r})
s = ort.InferenceSession({str(tmp_path / "best.onnx")!r}, providers=["CPUExecutionProvider"])
meta = json.loads(s.get_modelmeta().custom_metadata_map["dfpipe"])
a = s.run(None, {{"image": x}})[0]
extra = {{"dfpipe.json": ""}}
m = torch.jit.load({str(tmp_path / "best.torchscript.pt")!r}, _extra_files=extra)
b = m(torch.from_numpy(x)).detach().numpy()
assert not any(k.startswith("dfpipe") for k in sys.modules), "dfpipe was imported"
print(json.dumps({{"onnx": a.tolist(), "ts": b.tolist(), "threshold": meta["threshold"],
                  "ts_threshold": json.loads(extra["dfpipe.json"])["threshold"]}}))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.strip().splitlines()[-1])
    expected = reference(model, x)
    assert np.abs(np.array(got["onnx"]) - expected).max() <= ONNX_TOLERANCE
    assert np.abs(np.array(got["ts"]) - expected).max() <= TORCHSCRIPT_TOLERANCE
    assert got["threshold"] == got["ts_threshold"] == 0.42


class SingularValues(Detector):
    """A detector built on an operator ONNX has no counterpart for (singular values)."""

    name = "singular"

    def __init__(self) -> None:
        super().__init__(nn.Conv2d(3, 4, 3), 4, input_size=16, mean=HALF, std=HALF, dropout=0.0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.svdvals(self.backbone(x).flatten(2))


def test_a_detector_that_cannot_export_says_why_and_what_to_do(tmp_path) -> None:
    detector = SingularValues().eval()
    model = Model(detector, tmp_path / "best.pt", "singular", 16, HALF, HALF, 0.5, "default")
    with pytest.raises(
        ExportError,
        match=r"best\.pt: singular cannot be exported to onnx .*linalg_svdvals.*"
        r"try --format torchscript",
    ):
        to_onnx(model, tmp_path / "best.onnx")
    assert not (tmp_path / "best.onnx").exists() and not list(tmp_path.glob(".*part"))


def test_the_cli_states_the_int8_bound_export_applies() -> None:
    from dfpipe import __main__ as cli

    assert cli.INT8_MAX_FLIP_RATE == INT8_MAX_FLIP_RATE
    assert cli._parser().parse_args(["export", "m.pt", "--format", "onnx"]).int8_max_flip_rate == INT8_MAX_FLIP_RATE


def test_int8_needs_onnx(tmp_path, capsys) -> None:
    _, path = model_file(tmp_path, "meso4")
    assert main(["export", str(path), "--format", "torchscript", "--int8"]) == 2
    assert "--int8 quantises an ONNX export" in capsys.readouterr().err


def test_meso_at_32_px_cannot_go_to_onnx_and_says_so(tmp_path, crops) -> None:
    """Meso's last pool is adaptive to 8×8; at 32 px its input is 4×4, which ONNX's pooling cannot express."""
    torch.manual_seed(0)
    path = write_model_file(
        tmp_path / "best.pt",
        create_detector("meso4", input_size=32),
        spec={"name": "meso32", "model": "meso4", "input_size": 32},
    )
    with pytest.raises(
        ExportError,
        match=r"best\.pt: meso32 cannot be exported to onnx \(SymbolicValueError: "
        r"Unsupported: ONNX export of operator adaptive_max_pool2d.*try --format "
        r"torchscript",
    ):
        export(path, "onnx")
    (ts_path,) = export(path, "torchscript")  # the other format works, as the message says
    model = load_model(path)
    x = inputs(model, crops)
    assert np.abs(torchscript_scores(ts_path, x)[0] - reference(model, x)).max() <= TORCHSCRIPT_TOLERANCE
