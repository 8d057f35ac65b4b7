rule source:
    output:
        json=f"{OUT}/source.json",
    params:
        code=CODE["source"],
        source=config["source"],
        settings=config[config["source"]],
        dataset=config["dataset"],
        splits=config["splits"],
    log:
        f"{OUT}/logs/source.log",
    message:
        "Preparing the {params.source} video source"
    threads: 2
    conda:
        ENV
    script:
        "../../scripts/source.py"
