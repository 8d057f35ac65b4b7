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


# Scores of every model trained on all methods on one test setting's shards: one job per setting, so adding a
# setting adds one job (models load in a second; the job's start-up, torch's import, is paid once).
rule predict_setting:
    input:
        models=model_files(rules.train.output.best, SETTING_RUNS),
        test=lambda wc: setting_shards(wc.setting),
    output:
        table=f"{OUT}/predictions/test_settings/{{setting}}.parquet",
    params:
        code=CODE["predict_setting"],
        runs=[{"detector": r.detector, "train_quality": r.quality, "spec": detector_spec(config, r.detector)}
              for r in SETTING_RUNS],
        device=TRAIN_DEVICE,
    log:
        f"{OUT}/logs/predict/test_settings/{{setting}}.log",
    message:
        "Scoring every model trained on all methods on test setting {wildcards.setting}"
    threads: 2
    resources:
        **gpu_job(),
    conda:
        ENV
    script:
        "../../scripts/predict_setting.py"
