checkpoint manifest:
    input:
        source=rules.source.output.json,
    output:
        table=MANIFEST,
    params:
        code=CODE["manifest"],
        methods=config["dataset"]["methods"],
        compression=config["dataset"]["compression"],
        videos_per_job=config["batching"]["videos_per_job"],
    log:
        f"{OUT}/logs/manifest.log",
    message:
        "Probing every video into the manifest"
    threads: 2
    conda:
        ENV
    script:
        "../../scripts/manifest.py"
