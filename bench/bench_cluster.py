"""Benchmark: how many cluster jobs a full FF++ plan (5,000 videos) submits through profiles/slurm.

The SLURM executor plugin runs against the stand-in sbatch/sacct (tests/standins/slurm.py) in touch mode: every
output exists beforehand (the synthetic manifest of bench_dag.py, the rest created as empty files) and each
submitted job only touches its outputs. So Snakemake's real scheduler, grouping and checkpoint handling run on
the full-size plan (--forceall) in minutes, without a video. Prints the submissions per rule or group.
The weights files a --configfile names (detectors[].pretrained, probes.backbones[].weights, relative paths) are
created empty in the temporary work folder: config validation only checks at start-up that they exist.

    .venv/bin/python bench/bench_cluster.py [--videos-per-job 50] [--configfile configs/ffpp-paper.yaml]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from bench_dag import synthetic_manifest

from dfpipe.config import weight_files

REPO = Path(__file__).resolve().parents[1]
STANDIN = REPO / "tests" / "standins" / "slurm.py"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ids", type=int, default=1000)
    parser.add_argument("--videos-per-job", type=int, default=50)
    parser.add_argument("--configfile", type=Path, help="study settings (detectors, qualities) to plan with")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work, bin_dir, state = Path(tmp) / "work", Path(tmp) / "bin", Path(tmp) / "state"
        for folder in (work / "data", bin_dir):
            folder.mkdir(parents=True)
        for name in ("sbatch", "srun", "sacct", "squeue", "sacctmgr", "sinfo"):
            (bin_dir / name).symlink_to(STANDIN)
        (work / "data/source.json").write_text(json.dumps({"source": "local", "dataset_root": ".", "splits_dir": "."}))
        time.sleep(0.01)
        synthetic_manifest(args.ids, args.videos_per_job).to_parquet(work / "data/manifest.parquet")
        settings = yaml.safe_load(args.configfile.read_text()) if args.configfile else {}
        settings.update(
            {
                "source": "local",
                "local": {"root": "."},
                "output_root": "data",
                "results_dir": "results",
                "batching": {"videos_per_job": args.videos_per_job},
            }
        )
        (work / "config.yaml").write_text(yaml.safe_dump(settings))
        # empty stand-ins for the weights files: planning only checks that they exist
        for _, name in weight_files(settings):
            path = Path(name).expanduser()
            if not path.is_absolute():  # an absolute path is the user's own file, left as it is
                (work / path).parent.mkdir(parents=True, exist_ok=True)
                (work / path).touch()
        base = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile", "config.yaml"]
        proc = subprocess.run([*base, "--cores", "1", "--summary"], cwd=work, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"snakemake --summary failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        summary = proc.stdout
        for line in summary.splitlines()[1:]:
            name = line.split("\t")[0]
            if "\t" in line and not (work / name).exists():
                (work / name).parent.mkdir(parents=True, exist_ok=True)
                (work / name).touch()
        env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "SLURM_STANDIN_DIR": str(state),
            "SLURM_STANDIN_TOUCH": "1",
            "SLURM_STANDIN_ACCOUNT": "myproject",
        }
        start = time.perf_counter()
        proc = subprocess.run(
            [
                *base,
                "--profile",
                str(REPO / "profiles/slurm"),
                "--workflow-profile",
                "none",
                "--forceall",
                # Local rules (the report pages) run in this process, not as cluster jobs: leave them out.
                "--omit-from",
                "report_data",
                "report_results",
                "--slurm-init-seconds-before-status-checks",
                "1",
                "--slurm-status-command",
                "sacct",
            ],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
        )
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            text = proc.stdout + proc.stderr
            errors = [text[i : i + 1500] for i in range(len(text)) if text.startswith("Error in", i)][:3]
            sys.exit("snakemake failed:\n" + ("\n".join(errors) or text[-3000:]))
        calls = [json.loads(line)["args"] for line in (state / "calls.jsonl").read_text().splitlines()]
    kinds = collections.Counter()
    for call in calls:
        comment = call[call.index("--comment") + 1]
        kinds[comment.removeprefix("rule_").split("_wildcards_")[0].split("_")[0]] += 1
    print(
        f"videos: {args.ids * 5}, videos per job: {args.videos_per_job}, cluster jobs submitted: {len(calls)} "
        f"({elapsed:.0f} s)"
    )
    for kind, n in kinds.most_common():
        print(f"  {kind:12s} {n}")


if __name__ == "__main__":
    main()
