"""Test-set AUC of a MobileNet as PyTorch, as float ONNX and as int8 dynamic-quantised ONNX (what export costs in AUC).

    .venv/bin/python bench/bench_export_int8.py --shards DATA/shards/q95 [--model best.pt] [--workdir DIR]
                                                [--input-size 128] [--epochs 2] [--steps 25] [--ela]

Without `--model`, trains the demo's MobileNet (MobileNetV2 from the packaged ImageNet weights, the demo's
train settings) on `--shards`' train/val shards first (dfpipe.models.train.train_job, CPU). Then exports
best.pt to ONNX, quantises it (export.quantize_int8) and scores the test shards' crops (the evaluation
loader: decode, ELA when the model has it, resize, normalisation) with all three. Prints frame-level AUCs,
the largest score difference to PyTorch and the file sizes; never asserts.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from dfpipe.apps.export import onnx_scores, quantize_int8, to_onnx
from dfpipe.apps.predict import load_model
from dfpipe.data.loader import make_loader, normalize
from dfpipe.evaluation.predict import eval_stream
from dfpipe.models import train


def train_demo_mobilenet(shards: Path, out_dir: Path, input_size: int, epochs: int, steps: int, ela: bool) -> Path:
    spec = {
        "name": "mobilenet_ela" if ela else "mobilenet",
        "model": "mobilenet_v2",
        "pretrained": "imagenet",
        "input_size": input_size,
        "dropout": 0.2,
        **({"ela": True} if ela else {}),
    }
    settings = {
        "epochs": epochs,
        "max_steps_per_epoch": steps,
        "batch_size": 32,
        "lr": 1e-3,
        "weight_decay": 5e-4,
        "seed": 1024,
        "checkpoint_every": 500,
        "augment": {},
    }
    start = time.perf_counter()
    best = train.train_job(
        {
            "spec": spec,
            "settings": settings,
            "methods": "all",
            "train": sorted(map(str, shards.glob("train-*.tar"))),
            "val": sorted(map(str, shards.glob("val-*.tar"))),
            "out_dir": str(out_dir),
            "device": "cpu",
        },
    )
    print(
        f"trained {spec['name']} at {input_size} px, {epochs}x{steps} steps of 32: "
        f"{time.perf_counter() - start:.0f} s (CPU)"
    )
    return best


def test_inputs(model_path: Path, shards: Path) -> tuple[np.ndarray, np.ndarray]:
    """Normalised float32 test crops and their labels, as evaluation feeds them to the detector."""
    model = load_model(model_path, "cpu")
    images, labels = [], []
    for batch, lab, _meta in make_loader(eval_stream(model.detector, sorted(shards.glob("test-*.tar")), 64), 0):
        images.append(normalize(batch, model.mean, model.std).numpy())
        labels.append(lab.numpy())
    return np.concatenate(images), np.concatenate(labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=Path, required=True, help="a quality's shards folder, e.g. data/shards/q95")
    ap.add_argument("--model", type=Path, help="a trained best.pt (default: train the demo MobileNet first)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_export_int8"))
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--ela", action="store_true", help="train the ELA variant")
    args = ap.parse_args()
    best = args.model or train_demo_mobilenet(
        args.shards, args.workdir / "model", args.input_size, args.epochs, args.steps, args.ela
    )
    model = load_model(best, "cpu")
    images, labels = test_inputs(best, args.shards)
    with torch.no_grad():
        torch_scores = torch.sigmoid(model.detector(torch.from_numpy(images)).float()).numpy()
    float_path = to_onnx(model, args.workdir / "model.onnx")
    int8_path = quantize_int8(float_path)
    float_scores, int8_scores = onnx_scores(float_path, images), onnx_scores(int8_path, images)
    print(f"{len(labels)} test crops ({int(labels.sum())} fake) of {args.shards}, model {model.name}")
    for what, scores, path in (
        ("pytorch", torch_scores, best),
        ("onnx float", float_scores, float_path),
        ("onnx int8", int8_scores, int8_path),
    ):
        print(
            f"{what:11s} AUC {roc_auc_score(labels, scores):.4f}  max |score - pytorch| "
            f"{np.abs(scores - torch_scores).max():.4f}  file {path.stat().st_size / 1e6:.1f} MB"
        )


if __name__ == "__main__":
    main()
