"""Benchmark: Snakemake planning time for a full-size FF++ DAG (5,000 videos), dry-run and no-op rerun.

A synthetic manifest of 1,000 originals + 4 × 1,000 fakes stands in for the real one (the DAG's shape depends
only on the manifest), so no video is needed. Prints seconds; targets are < 5 s for each.

    .venv/bin/python bench/bench_dag.py [--videos-per-job 50]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from dfpipe.data.layout import METHODS, ORIGINAL
from dfpipe.data.manifest import COLUMNS

REPO = Path(__file__).resolve().parents[1]


def synthetic_manifest(n_ids: int, videos_per_job: int) -> pd.DataFrame:
    rows = []
    for method in (ORIGINAL, *METHODS):
        for i in range(n_ids):
            vid = f"{i:03d}" if method == ORIGINAL else f"{i:03d}_{(i + 1) % n_ids:03d}"
            rows.append(
                {
                    "video_id": vid,
                    "method": method,
                    "compression": "c23",
                    "split": "train",
                    "label": int(method != ORIGINAL),
                    "path": f"{method}/{vid}.mp4",
                    "mask_path": None,
                    "fps": 30.0,
                    "n_frames": 300,
                    "duration": 10.0,
                    "bytes": 1,
                    "width": 1280,
                    "height": 720,
                    "status": "ok",
                    "error": None,
                }
            )
    df = pd.DataFrame(rows)
    df["key"] = df.method + "/" + df.video_id
    df["batch"] = df.groupby("method").cumcount() // videos_per_job
    return df[COLUMNS]


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return elapsed, proc.stdout + proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ids", type=int, default=1000)
    parser.add_argument("--videos-per-job", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "data").mkdir()
        (work / "data/source.json").write_text(json.dumps({"source": "local", "dataset_root": ".", "splits_dir": "."}))
        time.sleep(0.01)
        synthetic_manifest(args.ids, args.videos_per_job).to_parquet(work / "data/manifest.parquet")
        cfg = work / "config.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {"source": "local", "local": {"root": "."}, "batching": {"videos_per_job": args.videos_per_job}}
            )
        )
        base = [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(REPO / "Snakefile"),
            "--configfile",
            str(cfg),
            "--cores",
            "2",
        ]
        dry, out = timed([*base, "-n", "--quiet", "rules"], work)
        total = next((line.split()[-1] for line in out.splitlines() if line.startswith("total")), "?")
        # Stand-in outputs for every job, then --touch to record them as up to date in the right order.
        _, summary = timed([*base, "--summary"], work)
        for line in summary.splitlines():
            name = line.split("\t")[0]
            if "\t" in line and name != "output_file" and not (work / name).exists():
                (work / name).parent.mkdir(parents=True, exist_ok=True)
                (work / name).touch()
        timed([*base, "--touch", "--quiet", "all"], work)
        noop_dry, _ = timed([*base, "-n"], work)
        noop, out = timed([*base], work)
        assert "Nothing to be done" in out, out[-1000:]
    print(f"videos: {args.ids * 5}, videos per job: {args.videos_per_job}, jobs planned: {total}")
    print(f"dry-run from scratch : {dry:6.2f} s  (target < 5 s)")
    print(f"no-op dry-run        : {noop_dry:6.2f} s  (target < 5 s)")
    print(f"no-op rerun          : {noop:6.2f} s  (target < 5 s)")


if __name__ == "__main__":
    main()
