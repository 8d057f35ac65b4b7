"""Provenance of a result: which config, code, encoder, manifest and library versions produced it."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
# Distribution names whose versions change results (torch/timm: models; scikit-learn: metrics).
PACKAGES = ("torch", "timm", "scikit-learn", "numpy", "pandas")


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of the config as canonical JSON (sorted keys, no whitespace), so key order never matters."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def file_hash(path: str | os.PathLike) -> str:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file to hash for provenance does not exist")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def code_version(repo: str | os.PathLike = REPO_ROOT) -> str:
    """`git describe --always --dirty` of `repo` (tag or commit, "+dirty" with uncommitted changes to tracked
    files), or "unknown" outside a git work tree or without git."""
    try:
        # --no-optional-locks: describe --dirty would otherwise refresh (write) the index.
        proc = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(repo), "describe", "--always", "--abbrev=12", "--dirty=+dirty"],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else "unknown"


def package_versions() -> dict[str, str]:
    """Python and `PACKAGES` versions, read from installed metadata (nothing is imported)."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def collect(
    config: dict[str, Any],
    manifest_path: str | os.PathLike,
    cjpeg_version: str,
    cjpeg_flags: list[str],
    repo: str | os.PathLike = REPO_ROOT,
) -> dict[str, Any]:
    """Provenance record for result files. Pass the validated config (`dfpipe.config.validate`), so defaults
    are filled in and a config that only spells a default out hashes the same. Only the manifest's file name
    is stored, never its absolute path. No time stamp: the same inputs give byte-identical result files (the
    files' own mtimes say when)."""
    return {
        "config_sha256": config_hash(config),
        "code_version": code_version(repo),
        "cjpeg_version": cjpeg_version,
        "cjpeg_flags": list(cjpeg_flags),
        "manifest": Path(manifest_path).name,
        "manifest_sha256": file_hash(manifest_path),
        "versions": package_versions(),
    }
