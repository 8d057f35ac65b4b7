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
    params:
        code=CODE["tables"],
        bootstrap=config["evaluate"]["bootstrap"],
        flags=config["jpeg"]["cjpeg_flags"],
    log:
        f"{OUT}/logs/tables.log",
    message:
        "Computing metrics, result tables and plots from the saved predictions"
    threads: 2
    conda:
        ENV
    script:
        "../../scripts/tables.py"
