# Rule `probes`: frozen-backbone probes trained on each dataset with a train split (the main dataset, every test
# source with train images) and on their union, each scored on every dataset's test split at every quality (the
# source x source matrix); the main dataset's own table is probe_table.csv. Features cached per dataset.
import time
from pathlib import Path

import pandas as pd

from dfpipe import gpus, runlog
from dfpipe.config import UNION
from dfpipe.evaluation import crossdataset, probes
from dfpipe.evaluation.probes import routing
from dfpipe.io import write_parquet

log = runlog.to_file(snakemake.log[0])
p = snakemake.params
# the job's share of the cores and its own GPU (held until this process ends)
job_setup = gpus.model_job(snakemake.threads, p.device)
cfg = p.probes
specs = {}
for entry in cfg["backbones"]:
    entry = {"name": entry} if isinstance(entry, str) else dict(entry)
    name = entry.pop("name")
    # an entry's own input_size, else probes.input_size for backbones that take any size (CNNs), else the
    # backbone's native size (ViTs: always theirs)
    specs[name] = probes.backbone_spec(name, entry, default_input_size=cfg.get("input_size"))
out_root = Path(snakemake.output.cross).parent.parent  # the output root: cross is {root}/probes/...
cache = out_root / "probes" / "features"
common = dict(cache_dir=cache, specs=specs, seed=p.seed, batch_size=cfg["batch_size"], device=job_setup.device)
# the shards the rule declares, never a glob of their folders: a stale tar there (say of a larger
# shards.per_split) would join the features without being an input
main_shards = [*snakemake.input.train, *snakemake.input.val, *snakemake.input.test]
main = probes.shard_getter(main_shards, dataset="main", train_shards=cfg["train_shards"], **common)


def source_shards(name):
    """The declared shards of test source `name` (under its shards folder, in q<Q>/ folders)."""
    folder = out_root / "test_sources" / name / "shards"
    return [s for s in snakemake.input.sources if Path(s).parents[1] == folder]


sources = {s: probes.shard_getter(source_shards(s), dataset=s, **common) for s in p.sources}
# every dataset's test split, by its name in the matrix
datasets = {p.dataset: main, **sources}
if UNION in datasets:
    raise ValueError(f"a dataset is named {UNION!r}, the name of the probes trained on all datasets")
trainable = {p.dataset: main}
for name, get in sources.items():
    if crossdataset.has_train_split(out_root / "test_sources" / name / "shards", cfg["train_qualities"]):
        trainable[name] = get
    else:
        log(f"{name}: no train images (a test-only source such as ffpp_tree): no probe trained on it")
settings = dict(
    backbones=[*specs, *cfg["combinations"]],
    train_qualities=cfg["train_qualities"],
    reductions=cfg["reductions"],
    classifiers=cfg["classifiers"],
    transforms=cfg["transforms"],
    test_transforms=cfg["test_transforms"],
    components=cfg["components"],
    ae_epochs=cfg["ae_epochs"],
    n_boot=cfg["bootstrap"],
    seed=p.seed,
)
# the probes trained on a test source or on the union: the train transforms config probes.cross_transforms
# names (null: all of probes.transforms), as they add fits while the main dataset's table stays whole
extra = {**settings, "transforms": cfg.get("cross_transforms") or cfg["transforms"]}


def fit_and_score(train_name, get, own, setting):
    """One probe table trained through `get`, scored on every dataset's test split; its matrix rows."""
    start = time.monotonic()
    table = probes.probe_table(
        routing.routed_getter(get, datasets),
        test_qualities=routing.routed_qualities(p.qualities, datasets, own=own),
        **setting,
    )
    log(f"probes trained on {train_name}: {len(table)} rows in {time.monotonic() - start:.1f} s")
    return table, routing.routed_probe_rows(table, train_name)


table, rows = fit_and_score(p.dataset, main, p.dataset, settings)
own, _ = routing.split_routed(table)
probes.write_probe_results(own, Path(snakemake.output.csv).parent)
log(f"probe table: {len(own)} rows, {int(own['auc'].notna().sum())} with an AUC")
cross = [rows]
for name, get in trainable.items():
    if name != p.dataset:
        cross.append(fit_and_score(name, get, name, extra)[1])
if len(trainable) > 1:  # with one dataset the union is that dataset
    cross.append(fit_and_score(UNION, routing.union_getter(trainable), None, extra)[1])
cross = [c for c in cross if len(c)]
matrix = pd.concat(cross, ignore_index=True) if cross else pd.DataFrame(columns=crossdataset.MATRIX_COLUMNS)
write_parquet(snakemake.output.cross, matrix)
log(f"cross-dataset probe rows: {len(matrix)}")
