"""Fault cases of running jobs side by side: every GPU already held, a job killed while holding one."""

from __future__ import annotations

import signal
import time

from test_gpus import seen, start


def test_every_gpu_held(tmp_path):
    """Every GPU held by other jobs: the extra job stops naming the lock folder and --resources gpu=; it runs once one is free."""
    holders = [start(tmp_path) for _ in range(3)]
    devices = [seen(h) for h in holders]
    extra = start(tmp_path, wait_s=0.3)
    _, err = extra.communicate(timeout=30)
    assert extra.returncode != 0
    assert "GpuBusy" in err and str(tmp_path / "locks") in err and "--resources gpu=" in err, err
    assert [h.poll() for h in holders] == [None, None, None]  # the running jobs keep their devices
    (tmp_path / "stop").touch()
    assert all(h.wait(timeout=30) == 0 for h in holders)
    (tmp_path / "stop").unlink()
    again = start(tmp_path)
    assert seen(again) in devices
    (tmp_path / "stop").touch()
    assert again.wait(timeout=30) == 0


def test_job_killed_holding_a_gpu(tmp_path):
    """A job killed (SIGKILL) while holding a GPU: its lock goes with it and a waiting job takes the device."""
    holders = [start(tmp_path) for _ in range(3)]
    devices = [seen(h) for h in holders]
    waiting = start(tmp_path, wait_s=30)
    time.sleep(0.3)
    holders[1].send_signal(signal.SIGKILL)
    holders[1].wait()
    assert seen(waiting) == devices[1]
    (tmp_path / "stop").touch()
    assert all(p.wait(timeout=30) == 0 for p in (holders[0], holders[2], waiting))
