"""Paths stored in artefacts are relative to the output root (even a local FF++ tree elsewhere becomes
`../..`-style), so nothing absolute is baked into any output and a tree can move with its inputs."""

from __future__ import annotations

import os
from pathlib import Path


def portable(path: str | os.PathLike, output_root: str | os.PathLike) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(output_root).resolve())).as_posix()


def resolve(stored: str, output_root: str | os.PathLike) -> Path:
    return Path(output_root) / stored
