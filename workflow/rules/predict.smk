# Scores of every model on the test shards of every quality (and on the val shards of its own quality, where
# the threshold is chosen). One job per model: it loads the model once; tables are computed from these files.
rule predict:
    input:
        model=rules.train.output.best,
        val=lambda wc: shard_files(wc.train_q, "val"),
        test=[shard for q in QUALITIES for shard in shard_files(q, "test")],
    output:
        table=f"{OUT}/predictions/{{detector}}/q{{train_q}}-{{train_methods}}.parquet",
    params:
        code=CODE["predict"],
        spec=lambda wc: detector_spec(config, wc.detector),
        qualities=QUALITIES,
        device=TRAIN_DEVICE,
    log:
        f"{OUT}/logs/predict/{{detector}}/q{{train_q}}-{{train_methods}}.log",
    message:
        "Scoring {wildcards.detector} (trained at q{wildcards.train_q}, {wildcards.train_methods}) on every test quality"
    threads: 2
    resources:
        **gpu_job(),
    conda:
        ENV
    script:
        "../../scripts/predict.py"
