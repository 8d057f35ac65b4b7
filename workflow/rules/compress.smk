rule compress:
    input:
        faces=rules.faces.output.table,
    output:
        table=f"{OUT}/compress/q{{quality}}/{{method}}/b{{batch}}.parquet",
    params:
        code=CODE["compress"],
        flags=config["compress"]["cjpeg_flags"],
    log:
        f"{OUT}/logs/compress/q{{quality}}/{{method}}/b{{batch}}.log",
    message:
        "MozJPEG quality {wildcards.quality}: {wildcards.method} batch {wildcards.batch}"
    threads: 2
    conda:
        ENV
    script:
        "../../scripts/compress.py"
