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
        provenance=report(f"{RESULTS}/provenance.json", caption="../report/provenance.rst", category="6. Run"),
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


# Codecs and perturbations beside MozJPEG (compress.codecs, compress.platform, perturb): fidelity and AUC of every
# test setting on the same test crops, detectors compared at equal bits per pixel.
BITRATE = {"category": "5. Codecs and perturbations"}


rule bitrate:
    input:
        mozjpeg_fidelity=expand(rules.fidelity.output.table, quality=QUALITIES, method=(ORIGINAL, *config["dataset"]["methods"])),
        setting_fidelity=expand(rules.fidelity_setting.output.table, setting=SETTINGS),
        mozjpeg_predictions=model_files(rules.predict.output.table, SETTING_RUNS),
        setting_predictions=expand(rules.predict_setting.output.table, setting=SETTINGS),
        manifest=MANIFEST,
    output:
        rd=report(f"{RESULTS}/bitrate/rate_distortion.csv", caption="../report/rate_distortion.rst", **BITRATE),
        rd_plot=report(f"{RESULTS}/bitrate/rate_distortion.png", caption="../report/rate_distortion.rst", **BITRATE),
        robustness=report(f"{RESULTS}/bitrate/robustness.csv", caption="../report/bitrate_robustness.rst", **BITRATE),
        robustness_md=report(f"{RESULTS}/bitrate/robustness.md", caption="../report/bitrate_robustness.rst", **BITRATE),
        auc_plot=report(f"{RESULTS}/bitrate/auc_vs_bpp.png", caption="../report/auc_vs_bpp.rst", **BITRATE),
        auc_at_bpp=report(f"{RESULTS}/bitrate/auc_at_bpp.csv", caption="../report/auc_vs_bpp.rst", **BITRATE),
    params:
        code=CODE["bitrate"],
        qualities=QUALITIES,
        settings=[setting_params(name) for name in SETTINGS],
        bpp_points=config["evaluate"]["bpp_points"],
        cjpeg_flags=config["compress"]["cjpeg_flags"],
        bootstrap=config["evaluate"]["bootstrap"],
    log:
        f"{OUT}/logs/bitrate.log",
    message:
        "Fidelity and AUC of every test setting against bits per pixel"
    conda:
        ENV
    script:
        "../../scripts/bitrate.py"
