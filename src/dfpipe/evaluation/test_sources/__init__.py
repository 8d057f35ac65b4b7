"""Test sources: datasets that only test the trained models (config `evaluate.test_sources`), one module per kind.

`KINDS` is the registry: a kind's line says what the workflow must know of it when it reads the config (whether
its images are built under the source's own folder, which config sections its build reads, its job's threads,
what its `root` must be), and its module, `dfpipe.evaluation.test_sources.<kind>`, builds and scans it:

    scan_entry(entry, folder, settings, *, where, threads) -> images.Scan

`folder` is where its images are (`source_root`), `settings` the config sections its line names. Adding a kind is
its module, its line in KINDS and its name in `module`'s import here, and its name in the schema's enum of `kind`
(workflow/schemas/config.schema.yaml).

`scan_source` dispatches an entry to its kind and checks the splits of what comes back; `images` reads the
image-folder layout every kind's images take, `shards` encodes them with MozJPEG into shards of the main format
and `fidelity` measures what MozJPEG cost (PSNR, SSIM).

Light on purpose (at import only what the rule files read anyway: dfpipe.config, crossdataset_layout): the rule
files read this registry, and the kinds' modules bring OpenCV, mediapipe and torch, so they are imported only when
an entry is scanned.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from dfpipe.config import schema_defaults
from dfpipe.evaluation.crossdataset_layout import SPLITS

if TYPE_CHECKING:
    import pandas as pd

    from dfpipe.evaluation.test_sources.images import Scan


@dataclass(frozen=True)
class Kind:
    built: bool  # its images are made under the source's own folder (<dest>/images), not read from `root`
    reads: tuple[str, ...] = ()  # config sections its build reads: its job's params, so a change there reruns it
    threads: int = 1  # of its scan job
    root: str | None = None  # what its `root` must name; None: no root


KINDS: dict[str, Kind] = {
    "ganfaces": Kind(built=True, reads=("source", "demo")),  # its splits follow the demo's, whose people it holds
    "images": Kind(built=False, root="a folder with real/ and fake/<generator>/"),
    "ffpp_tree": Kind(built=True, reads=("faces",), threads=2, root="an FF++-layout tree, e.g. downloads/ffpp"),
}
BUILT = tuple(name for name, kind in KINDS.items() if kind.built)


def module(kind: str) -> ModuleType:
    """The module that builds and scans `kind`."""
    # Import statements, not importlib alone: the code hash of the scripts that scan (dfpipe.codehash) follows only
    # these, so every kind is named here (tests/test_source_kinds.py checks it).
    from dfpipe.evaluation.test_sources import ffpp_tree, ganfaces, images  # noqa: F401

    return importlib.import_module(f"{__name__}.{kind}")


def kind_of(entry: Mapping[str, Any]) -> Kind:
    """The registry line of a test source's kind; an unknown kind is refused naming the entry."""
    if entry["kind"] not in KINDS:
        raise ValueError(f"evaluate.test_sources[{entry['name']}]: kind {entry['kind']!r}; allowed {list(KINDS)}")
    return KINDS[entry["kind"]]


def config_sections(config: Mapping[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    """The config sections the build of test source `entry` reads (its line's `reads`), for its job's params: only
    the FF++-tree kind reruns when the faces settings change, only the GAN-face set when the main dataset does."""
    return {section: config[section] for section in kind_of(entry).reads}


def source_root(entry: Mapping[str, Any], dest: Path) -> Path:
    """Where the images of a test source are: `dest/images` for a built kind, else its `root`."""
    kind = kind_of(entry)
    if kind.root is not None and not entry.get("root"):
        raise ValueError(f"evaluate.test_sources[{entry['name']}]: kind {entry['kind']} needs `root` ({kind.root})")
    if kind.built:
        return Path(dest) / "images"
    return Path(entry["root"]).expanduser()


def scan_source(
    entry: Mapping[str, Any], dest: Path, settings: Mapping[str, Any] | None = None, threads: int = 1
) -> Scan:
    """Build the images of a built kind under `dest`, then scan the image folder, its splits checked.
    `settings`: the config sections the kind reads (`config_sections`); without one the kind does without it (the
    FF++-tree crops take the schema's faces settings, the GAN-face set follows no main dataset). Keys `entry`
    leaves out take the schema's defaults, as config validation fills them."""
    entry = {**schema_defaults("evaluate.test_sources"), **entry}
    where = f"evaluate.test_sources[{entry['name']}]"
    kind = kind_of(entry)
    root = source_root(entry, dest)
    scan = module(entry["kind"]).scan_entry(entry, root, settings or {}, where=where, threads=threads)
    check_splits(scan.table, where, None if kind.built else root)
    return scan


def check_splits(table: pd.DataFrame, where: str, root: Path | None = None) -> None:
    """Refuse a test source whose test split (what every model is scored on) lacks real or fake images, or whose
    train or val split holds one class only (probes trained on the source fit on train and choose their threshold
    on val); empty train and val splits make a test-only source. `root`: the image folder of a kind that is not
    built, named in the fix."""
    for split in SPLITS:
        labels = table.loc[table["split"] == split, "label"]
        real, fake = int((labels == 0).sum()), int((labels == 1).sum())
        if (real and fake) or (split != "test" and not real + fake):
            continue
        missing = " and ".join(name for name, n in (("real", real), ("fake", fake)) if not n)
        fix = (
            f"add {missing} images under {root} (a stable hash of each file's name puts about 15% of them in test, "
            "15% in val and the rest in train)"
            if root is not None
            else f"add {missing} inputs to the source (its scan.json names what its build left out)"
        )
        raise ValueError(
            f"{where}: its {split} split holds {real} real and {fake} fake images, and scores need both classes; {fix}"
        )
