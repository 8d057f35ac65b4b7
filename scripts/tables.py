# Rule `tables`: metrics from the saved predictions, the result tables with provenance, and the plots.
from pathlib import Path

import numpy as np

from dfpipe import metrics, provenance, runlog, tables, tools

log = runlog.to_file(snakemake.log[0])
out = snakemake.output
preds = metrics.read_predictions(snakemake.input.predictions, extra=["features"])  # errors name the file
test, val = preds[preds.split == "test"], preds[preds.split == "val"]
scores = metrics.evaluate(
    test[metrics.PRED_COLUMNS], val[metrics.PRED_COLUMNS], n_boot=snakemake.params.bootstrap, n_jobs=snakemake.threads
)
record = provenance.collect(
    dict(snakemake.params.config),
    snakemake.input.manifest,
    tools.cjpeg_version(tools.find_cjpeg()),
    list(snakemake.params.flags),
)
tables.write_results(scores, Path(out.auc).parent, record)
if snakemake.params.ablation:
    tables.write_augmentation_table(scores, Path(out.augmentation).parent, snakemake.params.ablation, record)

tables.plot_auc_vs_quality(scores, out.auc_plot)
tables.plot_roc(test[test.train_methods == "all"], out.roc_plot, test_quality=snakemake.params.roc_quality)
own = test[(test.train_methods == "all") & (test.test_quality == test.train_quality)]
# t-SNE of the best detector: highest frame-level AUC on the whole test set at its own training quality.
best = (
    scores[
        (scores.level == "frame")
        & (scores.test_set == "all")
        & (scores.train_methods == "all")
        & (scores.test_quality == scores.train_quality)
    ]
    .sort_values("auc", ascending=False)
    .iloc[0]
)
chosen = own[(own.detector == best.detector) & (own.train_quality == best.train_quality)]
tables.plot_tsne(
    np.stack(chosen["features"].to_numpy()), chosen["label"].to_numpy(), chosen["method"].to_numpy(), out.tsne_plot
)
log(f"best detector for t-SNE: {best.detector} at q{best.train_quality} (AUC {best.auc:.4f})")
log(tables.to_markdown(tables.auc_table(scores, "frame")))
