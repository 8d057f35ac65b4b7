# One model per detector × training quality × training methods ("all" or one manipulation).
# A killed job restarted by Snakemake resumes from models/.../last.pt (not a declared output, so kept).
rule train:
    input:
        train=lambda wc: shard_files(wc.train_q, "train"),
        val=lambda wc: shard_files(wc.train_q, "val"),
    output:
        best=f"{OUT}/models/{{detector}}/q{{train_q}}-{{train_methods}}/best.pt",
    params:
        code=CODE["train"],
        spec=lambda wc: detector_spec(config, wc.detector),
        settings=lambda wc: training_settings(config, detector_spec(config, wc.detector)),
        device=TRAIN_DEVICE,
        gpus=config["train"]["gpus"],
    log:
        f"{OUT}/logs/train/{{detector}}/q{{train_q}}-{{train_methods}}.log",
    message:
        "Training {wildcards.detector} on quality {wildcards.train_q} ({wildcards.train_methods})"
    threads: 2
    resources:
        **gpu_job(config["train"]["gpus"]),
    conda:
        ENV
    script:
        "../../scripts/train.py"
