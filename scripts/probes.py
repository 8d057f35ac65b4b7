# Rule `probes`: frozen-backbone probes trained on the main dataset (scored on its test split at every quality and
# on every test source) and trained on each test source (scored on the main test split); features cached.
from pathlib import Path

import pandas as pd
import torch

from dfpipe import crossdataset, evaluate, probes, runlog
from dfpipe.io import write_parquet

log = runlog.to_file(snakemake.log[0])
torch.set_num_threads(snakemake.threads)  # the rule's share of the cores (torch would take them all)
p = snakemake.params
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
device = str(evaluate.pick_device(p.device))
common = dict(cache_dir=cache, specs=specs, seed=p.seed, batch_size=cfg["batch_size"], device=device)
main = probes.shard_getter(out_root / "shards", dataset="main", train_shards=cfg["train_shards"], **common)
sources = {s: probes.shard_getter(out_root / "test_sources" / s / "shards", dataset=s, **common) for s in p.sources}
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
table = probes.probe_table(
    main,
    test_qualities=[*p.qualities, *(f"{s}:{q}" for s in sources for q in p.qualities)],
    test_get=crossdataset.routed_getter(main, sources),
    **settings,
)
own, routed = crossdataset.split_routed(table)
probes.write_probe_results(own, Path(snakemake.output.csv).parent)
log(f"probe table: {len(own)} rows, {int(own['auc'].notna().sum())} with an AUC")
cross = [crossdataset.probe_rows(part, p.dataset, name) for name, part in routed.items()]
for name, get in sources.items():
    if not crossdataset.has_train_split(out_root / "test_sources" / name / "shards", cfg["train_qualities"]):
        log(f"{name}: no train images (a test-only source such as ffpp_tree): no probe trained on it")
        continue
    # trained on the source's train split (no transform-heavy extras needed: it is small), scored on the main test split
    back = probes.probe_table(get, test_qualities=p.qualities, test_get=main, **settings)
    cross.append(crossdataset.probe_rows(back, name, p.dataset))
matrix = pd.concat(cross, ignore_index=True) if cross else pd.DataFrame(columns=crossdataset.MATRIX_COLUMNS)
write_parquet(snakemake.output.cross, matrix)
log(f"cross-dataset probe rows: {len(matrix)}")
