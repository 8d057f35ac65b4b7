"""Reading the workflow stays light: every dry run, every no-op rerun and every cluster job parses the Snakefile, so
the rule files and the modules they import at parse time must not import the heavy libraries (torch, timm,
scikit-learn, matplotlib) that only jobs need (importing them took most of the time of a no-op dry run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "sklearn", "matplotlib")

# Runs Snakemake in this process with a finder that records, for each heavy top-level package, the first file of
# the repository (a rule file or a dfpipe module) on the stack when it was first imported; prints them as JSON.
WRAPPER = """
import json, runpy, sys, traceback

HEAVY, ROOT = set(sys.argv[1].split(",")), sys.argv[2]
seen = {}


class Recorder:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in HEAVY and top not in seen:
            stack = traceback.extract_stack()[:-1]
            mine = [f"{f.filename}:{f.lineno}" for f in stack if f.filename.startswith(ROOT) and "-packages" not in f.filename]
            seen[top] = mine[-3:] or [f"{f.filename}:{f.lineno}" for f in stack[-3:]]
        return None


sys.meta_path.insert(0, Recorder())
sys.argv = ["snakemake", *sys.argv[3:]]
try:
    runpy.run_module("snakemake", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print("HEAVY-IMPORTS " + json.dumps(seen))
sys.exit(code)
"""


def test_reading_the_workflow_imports_no_heavy_library(tmp_path):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["output_root"] = str(tmp_path / "data")
    config["results_dir"] = str(tmp_path / "results")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            WRAPPER,
            ",".join(HEAVY),
            str(REPO),
            "-s",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(cfg),
            "--cores",
            "1",
            "-n",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("HEAVY-IMPORTS "))
    seen = json.loads(line.removeprefix("HEAVY-IMPORTS "))
    assert not seen, f"reading the workflow imported {sorted(seen)}; first imported from: {seen}"
