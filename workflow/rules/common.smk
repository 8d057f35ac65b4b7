# Config validation, plus the helper functions of all rule files (kept here, apart from the rules, as Snakemake lint asks).
import functools
import pandas as pd
from snakemake.exceptions import WorkflowError
from dfpipe import config as dfconfig
from dfpipe.layout import METHODS, ORIGINAL

try:
    _validated = dfconfig.validate(config, source="config (config.yaml + --config overrides)")
except dfconfig.ConfigError as exc:
    raise WorkflowError(str(exc)) from None
config.clear()
config.update(_validated)

OUT = config["output_root"]
RESULTS = config["results_dir"]
QUALITIES = config["jpeg"]["qualities"]
SPLITS = ("train", "val", "test")
ENV = "../../envs/pipeline.yaml"
MANIFEST = f"{OUT}/manifest.parquet"


@functools.cache
def _manifest(mtime: float) -> pd.DataFrame:
    return pd.read_parquet(MANIFEST)


def manifest() -> pd.DataFrame:
    """The manifest table (after the checkpoint ran): re-read only when the file changed."""
    path = checkpoints.manifest.get().output.table
    return _manifest(os.path.getmtime(path))


def batch_files(pattern, **fixed):
    """`pattern` expanded over every (method, batch) of the manifest; other wildcards fixed."""
    pairs = manifest()[["method", "batch"]].drop_duplicates()
    return [pattern.format(method=m, batch=f"{b:04d}", **fixed) for m, b in pairs.itertuples(index=False)]


def batch_signature(wildcards):
    """What a batch's jobs depend on in the manifest. Used as a param so that rebuilding the manifest reruns
    only the batches whose videos really changed (the manifest file itself is an ancient() input)."""
    df = manifest()
    rows = df[(df["method"] == wildcards.method) & (df["batch"] == int(wildcards.batch))]
    cols = ["key", "path", "mask_path", "bytes", "n_frames", "status", "split"]
    return [[str(v) for v in row] for row in rows[cols].itertuples(index=False)]


def frames_for(wildcards):
    return config["frames"]["per_method"].get(wildcards.method, config["frames"]["per_video"])
