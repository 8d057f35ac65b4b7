# One job per method and quality (not per batch): measuring is cheap next to encoding, and fewer jobs keep
# the full-size DAG quick to plan. A param, so that changing the frame sample reruns these jobs.
rule fidelity:
    input:
        faces=lambda wc: batch_files(rules.faces.output.table, method=wc.method),
        jpeg=lambda wc: batch_files(rules.compress.output.table, method=wc.method, quality=wc.quality),
    output:
        table=f"{OUT}/fidelity/q{{quality}}/{{method}}.parquet",
    params:
        code=CODE["fidelity"],
        frames_per_video=config["fidelity"]["frames_per_video"],
    log:
        f"{OUT}/logs/fidelity/q{{quality}}/{{method}}.log",
    message:
        "PSNR/SSIM of {wildcards.method} at quality {wildcards.quality}"
    conda:
        ENV
    script:
        "../../scripts/fidelity.py"


rule fidelity_report:
    input:
        tables=expand(rules.fidelity.output.table, quality=QUALITIES, method=(ORIGINAL, *config["dataset"]["methods"])),
    output:
        csv=report(f"{RESULTS}/fidelity/psnr_ssim.csv", caption="../report/psnr_ssim_table.rst",
                   category="2. Compression", subcategory="Fidelity (PSNR/SSIM)"),
        plot=report(f"{RESULTS}/fidelity/psnr_ssim.png", caption="../report/psnr_ssim_plot.rst",
                    category="2. Compression", subcategory="Fidelity (PSNR/SSIM)"),
    params:
        code=CODE["fidelity_report"],
    log:
        f"{OUT}/logs/fidelity_report.log",
    message:
        "Writing the PSNR/SSIM report"
    conda:
        ENV
    script:
        "../../scripts/fidelity_report.py"


# PSNR/SSIM and bits per pixel of one test setting (all methods: the test split's crops are few).
rule fidelity_setting:
    input:
        faces=lambda wc: batch_files(rules.faces.output.table),
        images=expand(rules.compress_setting.output.table, method=(ORIGINAL, *config["dataset"]["methods"]), allow_missing=True),
    output:
        table=f"{OUT}/fidelity/{{setting}}.parquet",
    params:
        code=CODE["fidelity_setting"],
        frames_per_video=config["fidelity"]["frames_per_video"],
    log:
        f"{OUT}/logs/fidelity/{{setting}}.log",
    message:
        "PSNR/SSIM of test setting {wildcards.setting}"
    conda:
        ENV
    script:
        "../../scripts/fidelity_setting.py"
