from dfpipe.experiments import frame_rate_ablation

# The augmented-frame-rate ablation's table, when evaluate.frame_rate_ablation names a detector.
ABLATION = frame_rate_ablation(config)
ABLATION_OUTPUTS = {"augmentation": f"{RESULTS}/augmentation_table.csv",
                    "augmentation_md": f"{RESULTS}/augmentation_table.md"} if ABLATION else {}


rule tables:
    input:
        predictions=model_files(rules.predict.output.table),
        models=model_files(rules.train.output.best),
        manifest=MANIFEST,
    output:
        auc=f"{RESULTS}/auc_table.csv",
        auc_md=f"{RESULTS}/auc_table.md",
        robustness=f"{RESULTS}/robustness_matrix.csv",
        generalization=f"{RESULTS}/generalization_matrix.csv",
        metrics=f"{RESULTS}/metrics.csv",
        auc_plot=f"{RESULTS}/plots/auc_vs_quality.png",
        roc_plot=f"{RESULTS}/plots/roc.png",
        tsne_plot=f"{RESULTS}/plots/tsne.png",
        **ABLATION_OUTPUTS,
    params:
        code=CODE["tables"],
        bootstrap=config["evaluate"]["bootstrap"],
        flags=config["jpeg"]["cjpeg_flags"],
        ablation=ABLATION,
        roc_quality=config["train"]["qualities"][0],
        config=config,  # what the provenance records and hashes: a changed config reruns the tables
    log:
        f"{OUT}/logs/tables.log",
    message:
        "Computing metrics, result tables and plots from the saved predictions"
    threads: 2
    conda:
        ENV
    script:
        "../../scripts/tables.py"
