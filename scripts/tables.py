# Rule `tables`: metrics from the saved predictions, the result tables with provenance, and the plots.
from pathlib import Path

from dfpipe import provenance, runlog, tools
from dfpipe.evaluation import metrics, tables

log = runlog.to_file(snakemake.log[0])
out = snakemake.output
preds = metrics.read_predictions(snakemake.input.predictions, extra=["features"])  # errors name the file
test, val = preds[preds.split == "test"], preds[preds.split == "val"]
scores = metrics.metric_table(
    test[metrics.PRED_COLUMNS], val[metrics.PRED_COLUMNS], n_boot=snakemake.params.bootstrap, n_jobs=snakemake.threads
)
# config_sha256 hashes the sections that define these tables (dfpipe.config.tables_config), not test sources or probes
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
# t-SNE of evaluate.tsne_detectors (null: the one model of highest validation AUC), each at its training quality
# of highest validation AUC: chosen on the val split only, never on test.
choice = tables.tsne_choice(preds, snakemake.params.tsne_detectors)  # reads the split == "val" rows only
tables.plot_tsne_models(test, choice, out.tsne_plot)
for row in choice.itertuples(index=False):
    log(f"t-SNE: {row.detector} trained at q{row.train_quality} (validation AUC {row.val_auc:.4f})")
log(tables.to_markdown(tables.auc_table(scores, "frame")))
