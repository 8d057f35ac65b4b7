"""Logging for rule jobs: lines go to the rule's log file (progress bars stay on the terminal).

`to_file(path)` starts the job's log afresh (a rerun's log never shows an earlier run's traceback), attaches it
to the root logger, so `logging.getLogger(__name__)` in any module lands in it, and returns a `log(message)`
function for the rule scripts. Under Snakemake it also stops the job when Snakemake itself is killed: an
orphaned job would otherwise write its output with no run record, which a rerun would then trust."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

_FORMAT = "%(asctime)s %(message)s"
_DATEFMT = "%Y-%m-%d %H:%M:%S"
# How often an orphan check runs: a job outlives a killed Snakemake by at most this long.
ORPHAN_POLL_S = 0.5
# Set by the workflow (common.smk) in every Snakemake process that parses it, so its jobs know who runs them.
SNAKEMAKE_PID = "DFPIPE_SNAKEMAKE_PID"


def to_file(path: str | Path | None) -> Callable[[str], None]:
    """Return a `log(message)` function writing timestamped lines to `path` (stderr when None)."""
    if path is None:
        return lambda msg: print(msg, file=sys.stderr, flush=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("w", buffering=1)
    handler = logging.StreamHandler(handle)
    handler.setFormatter(logging.Formatter(_FORMAT, _DATEFMT))
    # Library warnings (e.g. from ffmpeg-python, webdataset) and every module logger go to the same file.
    logging.basicConfig(handlers=[handler], level=logging.INFO, force=True)
    logger = logging.getLogger("dfpipe.job")
    logger.info(f"job started (pid {os.getpid()})")

    def log(msg: str) -> None:
        logger.info(msg)

    # A failing job's traceback belongs in its log file too (Snakemake points the user there).
    previous = sys.excepthook

    def excepthook(kind, value, tb) -> None:
        log("FAILED:\n" + "".join(traceback.format_exception(kind, value, tb)))
        previous(kind, value, tb)

    sys.excepthook = excepthook
    if hasattr(sys.modules.get("__main__"), "snakemake"):  # a Snakemake `script:` job
        stop_when_orphaned(log)
    return log


def stop_when_orphaned(log: Callable[[str], None], poll_s: float = ORPHAN_POLL_S) -> threading.Thread:
    """Exit this process as soon as the Snakemake that started it is gone (checked now and every `poll_s`)."""
    pid = int(os.environ.get(SNAKEMAKE_PID) or os.getppid())

    def watch() -> None:
        while alive(pid):
            time.sleep(poll_s)
        log(f"Snakemake (pid {pid}) is gone: stopping, so that no output appears without its run record")
        logging.shutdown()
        os._exit(1)

    thread = threading.Thread(target=watch, name="stop-when-orphaned", daemon=True)
    thread.start()
    return thread


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a killed process that its parent has not reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


@contextmanager
def native_output_to(log: Callable[[str], None]) -> Iterator[None]:
    """Send whatever native code writes to file descriptor 2 (mediapipe's INFO lines, which ignore the
    GLOG/TF environment variables) into `log` instead of the terminal, line by line once the block ends.
    fd 2 itself is redirected, because native code bypasses Python's sys.stderr; it is restored afterwards."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            for line in sink.read().decode(errors="replace").splitlines():
                if line.strip():
                    log(f"native: {line}")
