"""Logging for rule jobs: lines go to the rule's log file (progress bars stay on the terminal)."""

from __future__ import annotations

import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Callable


def to_file(path: str | Path | None) -> Callable[[str], None]:
    """Return a `log(message)` function appending timestamped lines to `path` (stderr when None)."""
    if path is None:
        return lambda msg: print(msg, file=sys.stderr, flush=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a", buffering=1)
    # Library warnings (e.g. from ffmpeg-python, webdataset) go to the same file.
    logging.basicConfig(stream=handle, level=logging.INFO, force=True)

    def log(msg: str) -> None:
        handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")

    # A failing job's traceback belongs in its log file too (Snakemake points the user there).
    previous = sys.excepthook

    def excepthook(kind, value, tb) -> None:
        log("FAILED:\n" + "".join(traceback.format_exception(kind, value, tb)))
        previous(kind, value, tb)

    sys.excepthook = excepthook
    return log
