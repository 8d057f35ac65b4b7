# Test sources (evaluate.test_sources): extra image datasets, e.g. the offline GAN-face set or face crops of FF++'s
# FaceShifter / DeepFakeDetection videos (kind ffpp_tree), through the same MozJPEG qualities into shards of the
# main format, {OUT}/test_sources/<name>/shards/q<Q>/{train,test}-0000.tar.
# Every model trained on all methods is scored on them (cross_detectors); the probes use them too (probes.smk).
# crossdataset_layout and the kinds' registry, not crossdataset or the kinds' modules: reading the rule files must not
# import torch, timm or scikit-learn (they would slow every dry run and every job's start)
from dfpipe.evaluation import crossdataset_layout, test_sources

TEST_SOURCES = [s["name"] for s in config["evaluate"].get("test_sources") or []]
TEST_SOURCE_NAMES = "|".join(TEST_SOURCES) or "(?!)"  # no source: a pattern nothing matches
TEST_SOURCE_SPLITS = crossdataset_layout.SPLITS
PROBES = config.get("probes") or {}
# the models scored across datasets: every one trained on all methods
ALL_METHOD_RUNS = [r for r in RUNS if r.methods == "all" and r.detector in DETECTORS]


rule test_source:
    output:
        table=f"{OUT}/test_sources/{{name}}/images.parquet",
        report=f"{OUT}/test_sources/{{name}}/scan.json",
    params:
        code=CODE["test_source"],
        entry=lambda wc: crossdataset_layout.source_entry(config, wc.name),
        # the config sections its kind's build reads (the FF++-tree crops: faces; the GAN-face set, whose splits
        # follow the main dataset's: source, demo): a change elsewhere does not rerun it
        settings=lambda wc: test_sources.config_sections(config, crossdataset_layout.source_entry(config, wc.name)),
    log:
        f"{OUT}/logs/test_sources/{{name}}/scan.log",
    message:
        "Test source {wildcards.name}: building (GAN-face set, FF++-tree face crops) and scanning its images"
    wildcard_constraints:
        name=TEST_SOURCE_NAMES,
    threads: lambda wc: test_sources.kind_of(crossdataset_layout.source_entry(config, wc.name)).threads
    conda:
        ENV
    script:
        "../../scripts/test_source.py"


rule test_source_shards:
    input:
        table=rules.test_source.output.table,
    output:
        tars=[f"{OUT}/test_sources/{{name}}/shards/q{{quality}}/{s}-0000.tar" for s in TEST_SOURCE_SPLITS],
        counts=[f"{OUT}/test_sources/{{name}}/shards/q{{quality}}/{s}.counts.json" for s in TEST_SOURCE_SPLITS],
        index=f"{OUT}/test_sources/{{name}}/shards/q{{quality}}/index.json",
    params:
        code=CODE["test_source_shards"],
        entry=lambda wc: crossdataset_layout.source_entry(config, wc.name),
        flags=config["compress"]["cjpeg_flags"],
    log:
        f"{OUT}/logs/test_sources/{{name}}/q{{quality}}.log",
    message:
        "Test source {wildcards.name}: MozJPEG quality {wildcards.quality} and shards"
    wildcard_constraints:
        name=TEST_SOURCE_NAMES,
    threads: 2
    conda:
        ENV
    script:
        "../../scripts/test_source_shards.py"


# PSNR/SSIM of one test source's images after MozJPEG, against the decoded originals. Apart from the shards, read
# back from them: a change to the measure reruns this and the report, not the shards and every model scored on them.
rule test_source_fidelity:
    input:
        table=rules.test_source.output.table,
        tars=rules.test_source_shards.output.tars,
    output:
        quality=f"{OUT}/test_sources/{{name}}/shards/q{{quality}}/quality.parquet",
    params:
        code=CODE["test_source_fidelity"],
        entry=lambda wc: crossdataset_layout.source_entry(config, wc.name),
    log:
        f"{OUT}/logs/test_sources/{{name}}/q{{quality}}.fidelity.log",
    message:
        "Test source {wildcards.name}: PSNR/SSIM at MozJPEG quality {wildcards.quality}"
    wildcard_constraints:
        name=TEST_SOURCE_NAMES,
    conda:
        ENV
    script:
        "../../scripts/test_source_fidelity.py"


# PSNR/SSIM of every test source's images after MozJPEG, against the decoded originals, by original encoding.
rule test_source_fidelity_report:
    input:
        tables=expand(rules.test_source_fidelity.output.quality, name=TEST_SOURCES, quality=QUALITIES),
    output:
        csv=report(f"{RESULTS}/fidelity/test_sources_psnr_ssim.csv", caption="../report/psnr_ssim_test_sources.rst",
                   category="2. Compression", subcategory="PSNR/SSIM"),
    params:
        code=CODE["test_source_fidelity_report"],
        sources=TEST_SOURCES,
    log:
        f"{OUT}/logs/test_sources/psnr_ssim.log",
    message:
        "Writing the PSNR/SSIM report of the test sources"
    conda:
        ENV
    script:
        "../../scripts/test_source_fidelity_report.py"


rule cross_detectors:
    input:
        models=[m for r in ALL_METHOD_RUNS for m in expand(rules.train.output.best, detector=r.detector,
                                                            train_q=r.quality, train_methods="all")],
        test=lambda wc: crossdataset_layout.source_shards(OUT, wc.name, "test", QUALITIES),
    output:
        table=f"{OUT}/test_sources/{{name}}/predictions.parquet",
    params:
        code=CODE["cross_detectors"],
        runs=[{"detector": r.detector, "train_q": r.quality, "spec": detector_spec(config, r.detector)}
              for r in ALL_METHOD_RUNS],
        qualities=QUALITIES,
        device=TRAIN_DEVICE,
    log:
        f"{OUT}/logs/test_sources/{{name}}/predictions.log",
    message:
        "Scoring every model trained on all methods on test source {wildcards.name}"
    wildcard_constraints:
        name=TEST_SOURCE_NAMES,
    threads: 2
    resources:
        **gpu_job(),
    conda:
        ENV
    script:
        "../../scripts/cross_detectors.py"


rule cross_dataset:
    input:
        detectors=expand(rules.cross_detectors.output.table, name=TEST_SOURCES),
        scans=expand(rules.test_source.output.table, name=TEST_SOURCES),  # identities of the images
        own=[expand(rules.predict.output.table, detector=r.detector, train_q=r.quality, train_methods="all")[0]
             for r in ALL_METHOD_RUNS],
        probes=[f"{OUT}/probes/cross_dataset.parquet"] if PROBES else [],
        shortcuts=f"{RESULTS}/shortcut_table.csv",  # rule shortcuts: sets a trivial cue separates are marked
    output:
        csv=report(f"{RESULTS}/cross_dataset_matrix.csv", caption="../report/cross_dataset.rst",
                   category="3. Detection", subcategory="Cross-dataset"),
        plot=report(f"{RESULTS}/plots/cross_dataset.png", caption="../report/cross_dataset.rst",
                    category="3. Detection", subcategory="Cross-dataset"),
    params:
        code=CODE["cross_dataset"],
        sources=TEST_SOURCES,
        runs=[{"detector": r.detector, "train_q": r.quality} for r in ALL_METHOD_RUNS],
        dataset=config["source"],
        bootstrap=config["evaluate"]["bootstrap"],
    log:
        f"{OUT}/logs/cross_dataset.log",
    message:
        "Cross-dataset matrix over {params.sources}"
    conda:
        ENV
    script:
        "../../scripts/cross_dataset.py"
