# Config validation, plus the helper functions of all rule files (kept here, apart from the rules, as Snakemake lint asks).
import dataclasses
import functools
import os
import sys
from pathlib import Path
import pandas as pd
from snakemake.exceptions import WorkflowError
import dfpipe
from dfpipe import axes, codehash, interrupted, runlog
from dfpipe import config as dfconfig
from dfpipe.models.experiments import detector_spec, runs, training_settings
from dfpipe.data.layout import METHODS, ORIGINAL, SPLITS
from dfpipe.data.manifest import batches

try:
    _validated = dfconfig.validate(config, source="config (config.yaml + --config overrides)")
except dfconfig.ConfigError as exc:
    raise WorkflowError(str(exc)) from None


def _sorted_keys(value):
    """Snakemake compares params by their text, so dict key order must not depend on how config was written."""
    if isinstance(value, dict):
        return {k: _sorted_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(v) for v in value]
    return value


config.clear()
config.update(_sorted_keys(_validated))

OUT = config["output_root"]
RESULTS = config["results_dir"]
QUALITIES = config["compress"]["qualities"]
ENV = "../../envs/pipeline.yaml"
MANIFEST = f"{OUT}/manifest.parquet"
RUNS = runs(config)
DETECTORS = sorted({r.detector for r in RUNS})  # config detectors and derived runs (the frame-rate ablation)
TRAIN_DEVICE = config["train"]["device"]
# Test settings beyond the MozJPEG qualities (dfpipe.axes), scored by every configured detector's models trained
# on all methods (not the ablation's variants).
SETTINGS = axes.by_name(config)
SETTING_RUNS = [r for r in RUNS if r.methods == "all" and r.detector in {d["name"] for d in config["detectors"]}]


def gpu_job(n=1):
    """The resources of a job that runs a model: `n` of the GPUs given as `--resources gpu=N` (none on CPU), so
    that no more such jobs start than there are devices; each job claims its own (dfpipe.gpus.model_job)."""
    return {"gpu": 0 if TRAIN_DEVICE == "cpu" else n}


# A hash per rule script (of the dfpipe source it runs), given to each rule as its `code` param, so that editing
# a stage's module reruns that stage and what depends on it (Snakemake's code trigger sees the script only).
CODE = codehash.script_hashes(Path(workflow.basedir) / "scripts", Path(dfpipe.__file__).parent)

# Jobs stop when this Snakemake process is killed (dfpipe.runlog), so they cannot write outputs it never records.
os.environ[runlog.SNAKEMAKE_PID] = str(os.getpid())


def _report_only(argv):
    """Whether this Snakemake only writes the report (`--report [FILE]` without --report-after-run). Snakemake
    reads the Snakefile before it acts on --report and tells it nothing, so its command line is read."""
    args = argv[1:]
    return any(a == "--report" or a.startswith("--report=") for a in args) and "--report-after-run" not in args


# Before a run, Snakemake's report stops at the first missing result with a message that names no command.
if workflow.is_main_process and _report_only(sys.argv) and not Path(RESULTS, "auc_table.csv").exists():
    raise WorkflowError(
        f"--report: {RESULTS}/auc_table.csv does not exist yet, and the report collects the results of a finished "
        "run: run `snakemake --cores N` first (with the same config), then the report"
    )

# Outputs a killed Snakemake's orphaned jobs wrote without a run record go before the DAG is planned.
if workflow.is_main_process:
    _removed = interrupted.remove_unrecorded(Path.cwd(), [OUT, RESULTS])
    if _removed:
        print(f"Removed {len(_removed)} outputs of an interrupted run that have no run record (they will be "
              f"rebuilt): {', '.join(_removed[:5])}{' ...' if len(_removed) > 5 else ''}", file=sys.stderr)


@functools.cache
def _manifest(mtime: float):
    """Manifest batches plus, per (method, batch), the signature of its videos (computed once, not per job)."""
    df = pd.read_parquet(MANIFEST)
    cols = ["key", "path", "mask_path", "bytes", "n_frames", "status", "split"]
    signatures = {
        (m, int(b)): [[str(v) for v in row] for row in g[cols].itertuples(index=False)]
        for (m, b), g in df.groupby(["method", "batch"], sort=False)
    }
    return batches(df), signatures


def manifest():
    """The manifest's (method, batch) pairs and batch signatures, after the checkpoint ran; re-read only when
    the file changed."""
    path = checkpoints.manifest.get().output.table
    return _manifest(os.path.getmtime(path))


def batch_files(pattern, method=None, **fixed):
    """`pattern` expanded over every (method, batch) of the manifest, or of one method; other wildcards fixed."""
    return [
        pattern.format(method=m, batch=f"{b:04d}", **fixed)
        for m, b in manifest()[0]
        if method is None or m == method
    ]


def batch_signature(wildcards):
    """What a batch's jobs depend on in the manifest. Used as a param so that rebuilding the manifest reruns
    only the batches whose videos really changed (the manifest file itself is an ancient() input)."""
    return manifest()[1][(wildcards.method, int(wildcards.batch))]


def method_signature(method):
    """What a method's test-setting jobs depend on in the manifest: the signatures of its batches."""
    return [manifest()[1][(m, b)] for m, b in manifest()[0] if m == method]


def frames_for(wildcards):
    return config["frames"]["per_method"].get(wildcards.method, config["frames"]["per_video"])


def shard_files(q, split):
    """The fixed set of shard tars of one quality and split."""
    n = config["shards"]["per_split"][split]
    return [f"{OUT}/shards/q{q}/{split}-{i:04d}.tar" for i in range(n)]


def report_page(name, caption, category, subcategory=None):
    """results/report/<name>.html, shown in `snakemake --report` under `category` with workflow/report/<caption>."""
    return report(f"{RESULTS}/report/{name}.html", caption=f"../report/{caption}", category=category,
                  subcategory=subcategory)


def model_files(pattern, runs=RUNS):
    """`pattern` expanded over every trained model (detector × training quality × training methods), or `runs`."""
    return [pattern.format(detector=r.detector, train_q=r.quality, train_methods=r.methods) for r in runs]


def setting_params(name):
    """A test setting as a param, a plain dict (params are compared by their text)."""
    return dataclasses.asdict(SETTINGS[name])


def setting_shards(name):
    """The test shards of one test setting."""
    return [f"{OUT}/shards/{name}/test-{i:04d}.tar" for i in range(config["shards"]["per_split"]["test"])]
