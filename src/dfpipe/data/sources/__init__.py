"""Registry of video sources. Each source turns config into an FF++-layout dataset root on disk.

A source is a function `prepare(config, output_root) -> SourceInfo`; adding a source is one module
plus one line in SOURCES.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dfpipe.data.layout import read_splits
from dfpipe.data.sources import demo, ffpp, local


@dataclass(frozen=True)
class SourceInfo:
    name: str
    dataset_root: Path  # the FF++-layout tree the manifest reads (paths in it are stored relative to this)
    splits_dir: Path


def _demo(config: dict[str, Any], output_root: Path) -> SourceInfo:
    root = output_root / "sources" / "demo"
    demo.build(config["demo"], root, config["dataset"]["methods"], config["dataset"]["compression"])
    return SourceInfo("demo", root, Path(config["splits"]["dir"] or root / "splits"))


def _local(config: dict[str, Any], output_root: Path) -> SourceInfo:
    root = Path(config["local"]["root"]).expanduser()
    local.check_tree(root, config["dataset"]["methods"], config["dataset"]["compression"])
    splits_dir = Path(config["splits"]["dir"] or root / "splits")
    local.check_splits(root, splits_dir, config["dataset"]["compression"])
    return SourceInfo("local", root, splits_dir)


def _ffpp(config: dict[str, Any], output_root: Path) -> SourceInfo:
    # Downloads live outside any rule output so a failed job never deletes what was already fetched.
    root = output_root / "downloads" / "ffpp"
    splits_dir = Path(config["splits"]["dir"] or root / "splits")
    read_splits(splits_dir)  # a bad split file stops the run before hours of downloading, not after
    # ffpp.extra_sets (FaceShifter, DeepFakeDetection) are fetched for test sources only (kind ffpp_tree).
    methods = [*config["dataset"]["methods"], *config["ffpp"].get("extra_sets", [])]
    ffpp.download(config["ffpp"], root, methods, config["dataset"]["compression"])
    local.check_splits(root, splits_dir, config["dataset"]["compression"])
    return SourceInfo("ffpp", root, splits_dir)


SOURCES: dict[str, Callable[[dict[str, Any], Path], SourceInfo]] = {
    "demo": _demo,
    "local": _local,
    "ffpp": _ffpp,
}


def prepare(config: dict[str, Any], output_root: Path) -> SourceInfo:
    return SOURCES[config["source"]](config, Path(output_root))
