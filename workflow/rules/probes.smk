# Frozen-backbone probes (config probes; issue 9): one job, features cached per backbone x dataset x quality x
# split x transform under {OUT}/probes/features, so a rerun with other classifiers needs no backbone pass. Probes
# train on the main dataset, on each test source with train images and on their union, and each is scored on
# every dataset's test split (the probe rows of the cross-dataset matrix).
rule probes:
    input:
        # the job reads these shards and no others (scripts/probes.py: no glob of their folders)
        train=[s for q in PROBES.get("train_qualities", []) for s in shard_files(q, "train")],
        val=[s for q in PROBES.get("train_qualities", []) for s in shard_files(q, "val")],  # their thresholds
        test=[s for q in QUALITIES for s in shard_files(q, "test")],
        sources=[s for n in TEST_SOURCES for split in TEST_SOURCE_SPLITS for s in crossdataset_layout.source_shards(OUT, n, split, QUALITIES)],
    output:
        csv=report(f"{RESULTS}/probe_table.csv", caption="../report/probes.rst", category="4. Probes"),
        md=f"{RESULTS}/probe_table.md",
        plot=report(f"{RESULTS}/probe_effects.png", caption="../report/probes.rst", category="4. Probes"),
        cross=f"{OUT}/probes/cross_dataset.parquet",
    params:
        code=CODE["probes"],
        probes=PROBES,
        qualities=QUALITIES,
        sources=TEST_SOURCES,
        dataset=config["source"],
        seed=config["train"]["seed"],
        device=TRAIN_DEVICE,
    log:
        f"{OUT}/logs/probes.log",
    message:
        "Frozen-backbone probes: {params.probes[backbones]} x {params.probes[classifiers]}"
    threads: 2
    # its inputs are ready minutes before the models: started early it runs beside the training jobs, where
    # left to the end (it unlocks no other job) it ran alone on one core for 3 of the demo's 17 minutes
    priority: 10
    resources:
        **gpu_job(),
    conda:
        ENV
    script:
        "../../scripts/probes.py"
