"""Where a finished Snakemake run spent its time: jobs, job-minutes and the longest job per rule, from its log.

    .venv/bin/python bench/run_breakdown.py [.snakemake/log/<run>.snakemake.log]   (default: the newest log)

A job's time runs from its "Job N:" line to its "Finished jobid: N (Rule: R)" line, so with two jobs side by side
the job-minutes add up to about twice the wall time. Prints a markdown table, for the README's demo figures.
"""

from __future__ import annotations

import argparse
import collections
import re
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
START = re.compile(r"^Job (\d+): ")
FINISH = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)")


def job_times(log: Path) -> list[tuple[str, datetime, datetime]]:
    """(rule, start, end) of every finished job of the log."""
    now, started, done = None, {}, []
    for line in log.read_text().splitlines():
        if m := STAMP.match(line):
            now = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
        elif m := START.match(line):
            started[m.group(1)] = now
        elif (m := FINISH.match(line)) and m.group(1) in started:
            done.append((m.group(2), started[m.group(1)], now))
    return done


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("log", nargs="?", type=Path, help="a Snakemake log (default: the newest in .snakemake/log)")
    args = parser.parse_args()
    log = args.log or max(Path(".snakemake/log").glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime)
    jobs = job_times(log)
    if not jobs:
        raise SystemExit(f"{log}: no finished job")
    first, last = min(s for _, s, _ in jobs), max(e for _, _, e in jobs)
    per_rule = collections.defaultdict(list)
    for rule, start, end in jobs:
        per_rule[rule].append((end - start).total_seconds())
    print(f"{log}: {len(jobs)} jobs, wall {(last - first).total_seconds() / 60:.1f} min (first job start to last end)")
    train = [s for r, s, _ in jobs if r == "train"]
    if train:
        print(f"first training starts {(min(train) - first).total_seconds() / 60:.1f} min in")
    print("\n| rule | jobs | job-minutes | longest job (s) |\n|---|---:|---:|---:|")
    for rule, secs in sorted(per_rule.items(), key=lambda kv: -sum(kv[1])):
        print(f"| {rule} | {len(secs)} | {sum(secs) / 60:.1f} | {max(secs):.0f} |")
    total = sum(sum(s) for s in per_rule.values())
    print(f"| total | {len(jobs)} | {total / 60:.1f} | |")


if __name__ == "__main__":
    main()
