rule compress:
    input:
        faces=rules.faces.output.table,
    output:
        table=f"{OUT}/jpeg/q{{q}}/{{method}}/b{{batch}}.parquet",
    params:
        code=CODE["compress"],
        flags=config["jpeg"]["cjpeg_flags"],
    log:
        f"{OUT}/logs/jpeg/q{{q}}/{{method}}/b{{batch}}.log",
    message:
        "MozJPEG quality {wildcards.q}: {wildcards.method} batch {wildcards.batch}"
    threads: 2
    conda:
        ENV
    script:
        "../../scripts/compress.py"
