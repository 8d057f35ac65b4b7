# Rule `predict`: scores of one trained model on the val and test shards of one quality.
import pandas as pd
import torch

from dfpipe import experiments, runlog, train
from dfpipe.io import write_parquet

log = runlog.to_file(snakemake.log[0])
w = snakemake.wildcards
detector = experiments.build_detector({**snakemake.params.spec, "pretrained": snakemake.input.model})
own_quality = w.q == w.tq
# Val scores only serve to choose the threshold, which is fixed at the model's own training quality.
splits = (("val", snakemake.input.val), ("test", snakemake.input.test)) if own_quality else (("test", snakemake.input.test),)
parts = []
for split, shards in splits:
    with torch.inference_mode():
        part = train.predict(detector, list(shards), device=snakemake.params.device,
                             features=split == "test" and own_quality)  # t-SNE input: own quality only
    part.insert(0, "split", split)
    parts.append(part)
table = pd.concat(parts, ignore_index=True)
table.insert(0, "test_quality", int(w.q))
table.insert(0, "train_methods", w.tm)
table.insert(0, "train_quality", int(w.tq))
table.insert(0, "detector", w.detector)
log(f"{len(table)} samples scored")
write_parquet(snakemake.output.table, table)
