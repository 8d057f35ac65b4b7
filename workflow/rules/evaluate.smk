# Scores of every model on the val and test shards of every quality; tables are computed from these files.
rule predict:
    input:
        model=rules.train.output.best,
        val=lambda wc: shard_files(wc.q, "val"),
        test=lambda wc: shard_files(wc.q, "test"),
    output:
        table=f"{OUT}/predictions/{{detector}}/q{{tq}}-{{tm}}/q{{q}}.parquet",
    params:
        spec=lambda wc: detector_spec(config, wc.detector),
        device=TRAIN_DEVICE,
    log:
        f"{OUT}/logs/predict/{{detector}}/q{{tq}}-{{tm}}/q{{q}}.log",
    message:
        "Scoring {wildcards.detector} (trained at q{wildcards.tq}, {wildcards.tm}) on quality {wildcards.q}"
    threads: 2
    resources:
        gpu=0 if TRAIN_DEVICE == "cpu" else 1,
    conda:
        ENV
    script:
        "../../scripts/predict.py"
