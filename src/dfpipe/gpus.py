"""One GPU per job on a machine with several: a job claims free devices and sees only those.

Snakemake's `--resources gpu=N` only limits how many GPU jobs run at once; every job would still see all
devices and start on device 0. `claim()` takes a lock file per device (flock, released by the kernel when the
process ends, even when it is killed), picks free devices from the pool and sets CUDA_VISIBLE_DEVICES to them
before CUDA starts. Call it once, first thing in a job, before anything initialises CUDA.

The pool: $DFPIPE_GPUS (comma-separated ids; also how tests stand in for devices), else CUDA_VISIBLE_DEVICES
as the job inherited it, else the devices `nvidia-smi -L` lists. Inside a SLURM job the scheduler has already
given the job its devices, so nothing is claimed.

`model_job()` is the first call of every job that runs a model: torch's threads and the job's GPU in one place.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

POOL_ENV = "DFPIPE_GPUS"
LOCK_DIR_ENV = "DFPIPE_GPU_LOCK_DIR"


class GpuBusy(RuntimeError):
    """Not enough free devices within the wait."""


@dataclass
class Claim:
    """Devices held by this process; `release()` (or leaving the `with` block, or exiting) frees them."""

    devices: list[str]
    _handles: list[int] = field(default_factory=list, repr=False)

    def release(self) -> None:
        for fd in self._handles:
            os.close(fd)  # closing the descriptor drops its flock
        self._handles.clear()

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def pool(env: os._Environ | dict = os.environ) -> list[str]:
    """The device ids this machine offers to jobs (see the module docstring); [] when it has none."""
    for name in (POOL_ENV, "CUDA_VISIBLE_DEVICES"):
        value = env.get(name)
        if value is not None:
            return [d.strip() for d in value.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def lock_dir(env: os._Environ | dict = os.environ) -> Path:
    """Node-local folder of the per-device lock files (devices belong to the machine, not to a checkout)."""
    folder = Path(env.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "dfpipe-gpu-locks")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        folder.chmod(0o1777)  # users share the machine's devices, so they share the locks
    except PermissionError:
        pass
    return folder


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def claim(
    n: int = 1,
    *,
    device: str = "auto",
    wait_s: float = 600.0,
    poll_s: float = 1.0,
    env: os._Environ | dict = os.environ,
) -> Claim:
    """Claim `n` free devices and set env["CUDA_VISIBLE_DEVICES"] to them; waits up to `wait_s` for them.

    Claims nothing (an empty Claim) for device "cpu", inside a SLURM job, or on a machine without GPUs.
    """
    if device == "cpu" or n < 1:
        return Claim([])
    if env.get("SLURM_JOB_ID") and env.get(POOL_ENV) is None:
        return Claim([])  # the scheduler's CUDA_VISIBLE_DEVICES already holds this job's devices
    devices = pool(env)
    if not devices:
        return Claim([])
    if n > len(devices):
        raise GpuBusy(
            f"The job asks for {n} GPUs but this machine offers {len(devices)} ({','.join(devices)}): "
            f"lower train.gpus in config.yaml, or set {POOL_ENV} to the devices to use."
        )
    folder = lock_dir(env)
    deadline = time.monotonic() + wait_s
    while True:
        held: list[tuple[str, int]] = []
        for dev in devices:
            fd = _try_lock(folder / f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', dev)}.lock")
            if fd is not None:
                held.append((dev, fd))
                if len(held) == n:
                    break
        if len(held) == n:
            chosen = [dev for dev, _ in held]
            env["CUDA_VISIBLE_DEVICES"] = ",".join(chosen)
            log.info("Claimed GPU %s (CUDA_VISIBLE_DEVICES=%s)", ",".join(chosen), env["CUDA_VISIBLE_DEVICES"])
            return Claim(chosen, [fd for _, fd in held])
        for _, fd in held:
            os.close(fd)
        if time.monotonic() >= deadline:
            raise GpuBusy(
                f"No {n} free GPU(s) among {','.join(devices)} after {wait_s:.0f} s: other jobs hold the locks in "
                f"{folder}. Run Snakemake with --resources gpu=<number of GPUs> so that no more GPU jobs start "
                f"than there are devices."
            )
        time.sleep(poll_s)


@dataclass
class ModelJob:
    """What `model_job` set up: the device the job's model code is to use, and the GPUs the job holds."""

    device: str
    claim: Claim


def model_job(threads: int, device: str = "auto", n_gpus: int = 1, env: os._Environ | dict = os.environ) -> ModelJob:
    """Set up a job that runs a model; call it first, before anything starts CUDA.

    torch would use every core of the host, oversubscribing them while Snakemake runs jobs side by side, so its
    threads are set to the job's share (`threads`, the rule's). Unless `device` is "cpu", `n_gpus` devices are
    claimed (`claim`: held until the process ends), so the job works on its own GPU rather than device 0.
    The device returned is the one to use: "auto" resolved as `dfpipe.evaluation.predict.pick_device` resolves it
    ("cuda:0", the claimed GPU and the only one the job sees, else "cpu"), any other setting as it is. A
    multi-GPU job keeps "auto": each of its DDP workers resolves it to its own rank's GPU.
    """
    import torch  # only here: claiming devices, and its tests, need no torch

    torch.set_num_threads(threads)
    held = claim(n_gpus, device=device, env=env)
    if device == "auto" and n_gpus <= 1:
        device = "cuda:0" if torch.cuda.is_available() else "cpu"  # as dfpipe.evaluation.predict.pick_device
    return ModelJob(device, held)
