"""Job logs: fresh per run, shared with module loggers, and jobs that stop when their Snakemake is gone."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest

from dfpipe import runlog


@pytest.fixture
def restore_logging():
    """to_file takes over the root logger and sys.excepthook, as a job should; give them back to pytest."""
    root = logging.getLogger()
    handlers, level, hook = root.handlers[:], root.level, sys.excepthook
    yield
    for handler in root.handlers:
        handler.close()
    root.handlers[:], sys.excepthook = handlers, hook
    root.setLevel(level)


def test_a_job_log_starts_afresh_and_collects_module_loggers(tmp_path, restore_logging):
    path = tmp_path / "logs" / "job.log"
    path.parent.mkdir()
    path.write_text("FAILED:\nTraceback of an earlier run\n")
    log = runlog.to_file(path)
    log("batch done")
    logging.getLogger("dfpipe.data.faces").info("from a module logger")
    text = path.read_text()
    assert "FAILED" not in text and "earlier run" not in text
    assert "job started" in text and "batch done" in text and "from a module logger" in text


def test_a_job_stops_when_the_snakemake_that_started_it_is_killed(tmp_path):
    """The job's parent stands in for Snakemake: killed with -9, the job exits instead of writing its output."""
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    out = tmp_path / "out.txt"
    job = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import time; from dfpipe import runlog; "
                f"runlog.stop_when_orphaned(print, poll_s=0.05); time.sleep(3); open({str(out)!r}, 'w').write('x')"
            ),
        ],
        env={**os.environ, runlog.SNAKEMAKE_PID: str(parent.pid)},
    )
    time.sleep(1)
    parent.kill()
    parent.wait()
    assert job.wait(timeout=10) == 1
    assert not out.exists()
    assert not runlog.alive(parent.pid)


def test_native_output_goes_to_the_log_not_fd2(capfd):
    """What native code writes to fd 2 (here: this process and a child it starts) lands in the log only."""
    lines: list[str] = []
    with runlog.native_output_to(lines.append):
        os.write(2, b"INFO: native chatter\n")
        subprocess.run(["sh", "-c", "echo child chatter >&2"], check=True)
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"
    assert lines == ["native: INFO: native chatter", "native: child chatter"]
