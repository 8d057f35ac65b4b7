from dfpipe.config import check_tsne
from dfpipe.models.experiments import frame_rate_ablation

# The augmented-frame-rate ablation's table, when evaluate.frame_rate_ablation names a detector.
ABLATION = frame_rate_ablation(config)
AUGMENTATION = {"caption": "../report/augmentation.rst", "category": "3. Detection", "subcategory": "Augmentation"}
ABLATION_OUTPUTS = {"augmentation": report(f"{RESULTS}/augmentation_table.csv", **AUGMENTATION),
                    "augmentation_md": report(f"{RESULTS}/augmentation_table.md", **AUGMENTATION)} if ABLATION else {}


rule tables:
    input:
        predictions=model_files(rules.predict.output.table),
        models=model_files(rules.train.output.best),
        manifest=MANIFEST,
    output:
        auc=report(f"{RESULTS}/auc_table.csv", caption="../report/auc_table.rst", category="3. Detection", subcategory="AUC"),
        auc_md=report(f"{RESULTS}/auc_table.md", caption="../report/auc_table.rst", category="3. Detection", subcategory="AUC"),
        robustness=report(f"{RESULTS}/robustness_matrix.csv", caption="../report/robustness.rst", category="3. Detection",
                          subcategory="Robustness"),
        generalization=report(f"{RESULTS}/generalization_matrix.csv", caption="../report/generalization.rst", category="3. Detection",
                              subcategory="Generalization"),
        metrics=report(f"{RESULTS}/metrics.csv", caption="../report/metrics.rst", category="3. Detection", subcategory="AUC"),
        auc_plot=report(f"{RESULTS}/plots/auc_vs_quality.png", caption="../report/auc_plot.rst", category="3. Detection",
                        subcategory="Robustness"),
        roc_plot=report(f"{RESULTS}/plots/roc.png", caption="../report/roc.rst", category="3. Detection", subcategory="ROC"),
        tsne_plot=report(f"{RESULTS}/plots/tsne.png", caption="../report/tsne.rst", category="3. Detection", subcategory="t-SNE"),
        # written by tables.write_results beside the tables: config hash, code version, encoder
        provenance=report(f"{RESULTS}/provenance.json", caption="../report/provenance.rst", category="5. Run"),
        **ABLATION_OUTPUTS,
    params:
        code=CODE["tables"],
        bootstrap=config["evaluate"]["bootstrap"],
        flags=config["compress"]["cjpeg_flags"],
        ablation=ABLATION,
        roc_quality=config["train"]["qualities"][0],
        tsne_detectors=check_tsne(config),  # the names, each a configured detector; None: the best by val AUC
        # what the provenance hashes: the sections that define the tables (dfpipe.config.tables_config), so a change
        # to them reruns the tables and adding a test source or probes does not
        config=dfconfig.tables_config(config),
    log:
        f"{OUT}/logs/tables.log",
    message:
        "Computing metrics, result tables and plots from the saved predictions"
    threads: 2
    conda:
        ENV
    script:
        "../../scripts/tables.py"
