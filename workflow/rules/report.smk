# The result tables as HTML pages for `snakemake --report` (its page shows HTML inline, CSV only as a download).
# One rule for the data path's tables, one for the detection tables (both requested by `all`). Seconds of work:
# they run where Snakemake runs, never as cluster jobs.
localrules:
    report_data,
    report_results,


rule report_data:
    input:
        face_summary=rules.face_summary.output.csv,
        psnr_ssim=rules.fidelity_report.output.csv,
    output:
        face_summary=report_page("face_summary", "face_summary.rst", "1. Faces"),
        psnr_ssim=report_page("psnr_ssim", "psnr_ssim_table.rst", "2. Compression", "PSNR/SSIM"),
    params:
        code=CODE["report_pages"],
        titles={"face_summary": "Faces found per video", "psnr_ssim": "PSNR/SSIM per method and quality"},
    log:
        f"{OUT}/logs/report_data.log",
    message:
        "Writing the data tables as report pages"
    conda:
        ENV
    script:
        "../../scripts/report_pages.py"


rule report_results:
    input:
        auc=rules.tables.output.auc,
        robustness=rules.tables.output.robustness,
        generalization=rules.tables.output.generalization,
    output:
        auc=report_page("auc_table", "auc_table.rst", "3. Detection", "AUC"),
        robustness=report_page("robustness_matrix", "robustness.rst", "3. Detection", "Robustness"),
        generalization=report_page("generalization_matrix", "generalization.rst", "3. Detection", "Generalization"),
    params:
        code=CODE["report_pages"],
        titles={"auc": "Frame- and video-level AUC", "robustness": "AUC: training quality × test quality",
                "generalization": "AUC: training manipulation × test manipulation"},
    log:
        f"{OUT}/logs/report_results.log",
    message:
        "Writing the result tables as report pages"
    conda:
        ENV
    script:
        "../../scripts/report_pages.py"
