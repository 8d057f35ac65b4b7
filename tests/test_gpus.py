"""dfpipe.gpus: concurrent jobs on one machine each get their own device (stand-in device list in DFPIPE_GPUS)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dfpipe import gpus

# A job: claim, report what CUDA would see, hold the device until told to stop (a file appears).
JOB = """
import os, sys, time
from pathlib import Path
from dfpipe import gpus
claim = gpus.claim(int(sys.argv[1]), wait_s=float(sys.argv[2]), poll_s=0.05)
print(os.environ.get("CUDA_VISIBLE_DEVICES", "unset"), flush=True)
while not Path(sys.argv[3]).exists():
    time.sleep(0.05)
"""


def start(tmp_path: Path, n: int = 1, wait_s: float = 0.0, **env) -> subprocess.Popen:
    environ = {**os.environ, "DFPIPE_GPUS": "0,1,2", "DFPIPE_GPU_LOCK_DIR": str(tmp_path / "locks"), **env}
    environ.pop("SLURM_JOB_ID", None)
    return subprocess.Popen(
        [sys.executable, "-c", JOB, str(n), str(wait_s), str(tmp_path / "stop")],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def seen(proc: subprocess.Popen) -> str:
    return proc.stdout.readline().strip()


def test_concurrent_jobs_each_see_their_own_device(tmp_path):
    jobs = [start(tmp_path) for _ in range(3)]
    assert sorted(seen(j) for j in jobs) == ["0", "1", "2"]
    (tmp_path / "stop").touch()
    assert all(j.wait(timeout=30) == 0 for j in jobs)


def test_a_multi_gpu_job_gets_distinct_devices(tmp_path):
    one = start(tmp_path)
    assert seen(one) == "0"
    two = start(tmp_path, n=2)
    assert seen(two) == "1,2"
    (tmp_path / "stop").touch()
    assert one.wait(timeout=30) == 0 and two.wait(timeout=30) == 0


def test_pool_comes_from_the_inherited_visible_devices(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "2,3", "DFPIPE_GPU_LOCK_DIR": str(tmp_path)}
    jobs = [dict(env), dict(env)]  # two jobs' environments (one claim per process)
    with gpus.claim(1, env=jobs[0], wait_s=1) as first, gpus.claim(1, env=jobs[1], wait_s=1) as second:
        assert (first.devices, second.devices) == (["2"], ["3"])
        assert [j["CUDA_VISIBLE_DEVICES"] for j in jobs] == ["2", "3"]
    with gpus.claim(1, env=dict(env), wait_s=1) as again:
        assert again.devices == ["2"]  # released on leaving the block


def test_nothing_is_claimed_on_cpu_under_slurm_or_without_gpus(tmp_path):
    env = {"DFPIPE_GPU_LOCK_DIR": str(tmp_path), "CUDA_VISIBLE_DEVICES": "0"}
    assert gpus.claim(1, device="cpu", env=dict(env)).devices == []
    slurm = {**env, "SLURM_JOB_ID": "17"}
    assert gpus.claim(1, env=slurm).devices == [] and slurm["CUDA_VISIBLE_DEVICES"] == "0"
    assert gpus.claim(1, env={"DFPIPE_GPU_LOCK_DIR": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}).devices == []


def test_asking_for_more_devices_than_the_machine_has_names_the_setting(tmp_path):
    with pytest.raises(gpus.GpuBusy, match="train.gpus"):
        gpus.claim(4, env={"DFPIPE_GPUS": "0,1", "DFPIPE_GPU_LOCK_DIR": str(tmp_path)})


# A model job's set-up, as the rule scripts call it: print torch's threads, what CUDA would see and the device.
MODEL_JOB = """
import os, sys, torch
from dfpipe import gpus
job = gpus.model_job(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
print(torch.get_num_threads(), os.environ.get("CUDA_VISIBLE_DEVICES", "unset"), job.device, job.claim.devices)
"""


def model_job(tmp_path: Path, threads: int, device: str, n: int) -> list[str]:
    environ = {**os.environ, "DFPIPE_GPUS": "0,1,2", "DFPIPE_GPU_LOCK_DIR": str(tmp_path / "locks")}
    environ.pop("SLURM_JOB_ID", None)
    environ.pop("CUDA_VISIBLE_DEVICES", None)
    args = [sys.executable, "-c", MODEL_JOB, str(threads), device, str(n)]
    return (
        subprocess.run(args, env=environ, capture_output=True, text=True, check=True).stdout.strip().split(maxsplit=3)
    )


def test_a_model_job_gets_its_share_of_the_cores_and_its_own_gpu(tmp_path):
    threads, visible, device, held = model_job(tmp_path, 3, "auto", 1)
    assert threads == "3" and visible == "0" and held == "['0']"
    # "auto" resolves to the claimed device where CUDA works, else to the CPU
    import torch

    assert device == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert model_job(tmp_path, 2, "cpu", 1) == ["2", "unset", "cpu", "[]"]  # on CPU nothing is claimed
    # a multi-GPU (DDP) job keeps its device setting: each worker picks its own rank's GPU
    assert model_job(tmp_path, 1, "auto", 2) == ["1", "0,1", "auto", "['0', '1']"]
