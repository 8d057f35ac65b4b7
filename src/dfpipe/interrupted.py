"""Clean-up after a killed Snakemake: outputs without a run record are removed before the DAG is planned.

Snakemake marks each output of a started job in `.snakemake/incomplete/` and replaces the marker with a
metadata record when the job finishes. When Snakemake itself is killed, its jobs may still finish and write
their outputs, leaving the marker and no record. Snakemake checks the markers only for jobs known before the
manifest checkpoint, so a rerun kept every later orphan (faces, jpeg, shards, models) as up to date, and a
later parameter change skipped them (no recorded params to compare). Removing them makes the rerun rebuild
them like any missing output."""

from __future__ import annotations

import base64
import binascii
import os
import shutil
from pathlib import Path


def unrecorded_outputs(workdir: Path) -> list[tuple[Path, Path]]:
    """(output, marker) for every output marked as started in `.snakemake/incomplete` that exists on disk
    (output paths as Snakemake recorded them: relative to `workdir` unless configured absolute)."""
    markers = Path(workdir) / ".snakemake" / "incomplete"
    found = []
    for marker in sorted(p for p in markers.rglob("*") if p.is_file()):
        # Snakemake names a marker by the urlsafe base64 of the output path, cut into '@'-prefixed folders
        # when longer than a file name may be.
        encoded = "".join(part.removeprefix("@") for part in marker.relative_to(markers).parts)
        try:
            path = Path(base64.urlsafe_b64decode(encoded).decode())
        except (binascii.Error, UnicodeDecodeError):
            continue  # not a marker (e.g. Snakemake's 'migration_underway' flag)
        full = path if path.is_absolute() else Path(workdir) / path
        if full.exists():
            found.append((path, marker))
    return found


def another_run_holds_the_lock(workdir: Path) -> bool:
    """A running Snakemake (or the lock a killed one left, which Snakemake makes the user --unlock) is there."""
    return any((Path(workdir) / ".snakemake" / "locks").glob("*.lock"))


def remove_unrecorded(workdir: Path, roots: list[str]) -> list[str]:
    """Delete, under the output `roots`, every output of a job that started but never got a run record, and the
    temporary `.part` files killed jobs leave (dfpipe.io.atomic_path). Does nothing while another run holds
    the lock, since its running jobs have markers too. Returns what was removed, relative to `workdir`."""
    workdir = Path(workdir).resolve()
    if another_run_holds_the_lock(workdir):
        return []
    bases = [(workdir / r).resolve() for r in roots]
    removed = []
    for path, marker in unrecorded_outputs(workdir):
        full = (workdir / path).resolve()
        if not any(full.is_relative_to(b) for b in bases):
            continue
        shutil.rmtree(full) if full.is_dir() and not full.is_symlink() else full.unlink()
        marker.unlink()
        removed.append(str(path))
    for base in bases:
        for folder, _, names in os.walk(base):
            for name in names:
                if name.startswith(".") and name.endswith(".part"):
                    os.unlink(os.path.join(folder, name))
                    removed.append(os.path.relpath(os.path.join(folder, name), workdir))
    return removed
