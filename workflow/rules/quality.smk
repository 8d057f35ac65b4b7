rule quality:
    input:
        faces=rules.faces.output.table,
        jpeg=rules.compress.output.table,
    output:
        table=f"{OUT}/quality/q{{q}}/{{method}}/b{{batch}}.parquet",
    log:
        f"{OUT}/logs/quality/q{{q}}/{{method}}/b{{batch}}.log",
    message:
        "PSNR/SSIM at quality {wildcards.q}: {wildcards.method} batch {wildcards.batch}"
    conda:
        ENV
    script:
        "../../scripts/quality.py"


rule quality_report:
    input:
        tables=lambda wc: [t for q in QUALITIES for t in batch_files(rules.quality.output.table, q=q)],
    output:
        csv=f"{RESULTS}/quality/psnr_ssim.csv",
        plot=f"{RESULTS}/quality/psnr_ssim.png",
    log:
        f"{OUT}/logs/quality_report.log",
    message:
        "Writing the PSNR/SSIM report"
    conda:
        ENV
    script:
        "../../scripts/quality_report.py"
