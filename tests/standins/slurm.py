#!/usr/bin/env python3
"""Stand-in SLURM commands for tests: linked as sbatch, srun, sacct, squeue, sacctmgr and sinfo (the name it
is called by picks the command). State lives in $SLURM_STANDIN_DIR:

- sbatch appends its arguments as one JSON line to calls.jsonl, takes the next job id, prints it (the
  executor plugin passes --parsable) and runs the --wrap command in the background from the -D folder, output
  to the --output file, with SLURM_JOB_ID set; `<id>.state` holds RUNNING, then COMPLETED or FAILED.
- sacct / squeue print `<id>|<state>` for every job, as `sacct --parsable2 --format=JobIdRaw,State` does.
- srun drops its options and runs the command in the foreground (the job step inside a job).
- With $SLURM_STANDIN_REFUSE set, sbatch records a job whose --comment contains that text and refuses it
  (exit 1, as sbatch does for an invalid request): a test reads the arguments rendered for a job it does not run.
- With $SLURM_STANDIN_TOUCH set, a job runs its Snakemake command with --touch: it only marks its (existing)
  outputs as updated, so a full-size plan's submissions can be counted without running it (bench/bench_cluster.py).
- sacctmgr names $SLURM_STANDIN_ACCOUNT as the user's account; sinfo exists so the plugin sees SLURM.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path


def state_dir() -> Path:
    return Path(os.environ["SLURM_STANDIN_DIR"])


def option(args: list[str], *names: str) -> str | None:
    """The value of an option given as `--name value` or `--name=value`."""
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def sbatch(args: list[str]) -> int:
    folder = state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # Snakemake submits from several threads
        counter = folder / "last_id"
        job_id = str(int(counter.read_text()) + 1 if counter.exists() else 1000)
        counter.write_text(job_id)
        with open(folder / "calls.jsonl", "a") as calls:
            calls.write(json.dumps({"id": job_id, "args": args}) + "\n")
    refuse = os.environ.get("SLURM_STANDIN_REFUSE")
    if refuse and refuse in (option(args, "--comment") or ""):
        print(f"sbatch: error: stand-in refuses {refuse} jobs", file=sys.stderr)
        return 1
    wrap = option(args, "--wrap")
    if wrap is None:
        print("sbatch stand-in: only --wrap jobs are supported", file=sys.stderr)
        return 1
    output = (option(args, "--output", "-o") or "slurm-%j.out").replace("%j", job_id)
    (folder / f"{job_id}.state").write_text("RUNNING")
    env = {**os.environ, "SLURM_JOB_ID": job_id, "SLURM_JOBID": job_id}
    with open(output, "w") as out:
        subprocess.Popen(
            [sys.executable, __file__, "--run-job", job_id, wrap],
            cwd=option(args, "-D"),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    print(job_id)
    return 0


def run_job(job_id: str, wrap: str) -> int:
    if os.environ.get("SLURM_STANDIN_TOUCH"):
        wrap += " --touch"
    code = subprocess.call(wrap, shell=True)
    (state_dir() / f"{job_id}.state").write_text("COMPLETED" if code == 0 else "FAILED")
    return code


def status() -> int:
    for path in sorted(state_dir().glob("*.state")):
        print(f"{path.stem}|{path.read_text().strip()}")
    return 0


def srun(args: list[str]) -> int:
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 1
    return subprocess.call(args[i:])


def main() -> int:
    name = Path(sys.argv[0]).name
    args = sys.argv[1:]
    if args[:1] == ["--run-job"]:
        return run_job(args[1], args[2])
    if name == "sbatch":
        return sbatch(args)
    if name in ("sacct", "squeue"):
        return status()
    if name == "srun":
        return srun(args)
    if name == "sacctmgr":
        print(os.environ.get("SLURM_STANDIN_ACCOUNT", ""))
        return 0
    if name == "sinfo":
        return 0
    print(f"slurm stand-in: unknown command {name}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
