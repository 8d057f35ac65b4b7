# Shortcut baselines: the AUC of cues that need no learning (sharpness, high-frequency share, bits per pixel, prior
# JPEG quality, native size and aspect) on the main test split and on every test source's, at every quality. A set
# such a cue separates is flagged here and in the cross-dataset matrix.
rule shortcuts:
    input:
        main=[s for q in QUALITIES for s in shard_files(q, "test")],
        faces=lambda wc: batch_files(rules.faces.output.table),  # face boxes: the main crops' native size
        sources=[s for n in TEST_SOURCES for s in crossdataset_layout.source_shards(OUT, n, "test", QUALITIES)],
        scans=expand(rules.test_source.output.table, name=TEST_SOURCES),
    output:
        csv=report(f"{RESULTS}/shortcut_table.csv", caption="../report/shortcuts.rst", category="3. Detection",
                   subcategory="Shortcut baselines"),
        md=report(f"{RESULTS}/shortcut_table.md", caption="../report/shortcuts.rst", category="3. Detection",
                  subcategory="Shortcut baselines"),
        page=report_page("shortcut_table", "shortcuts.rst", "3. Detection", "Shortcut baselines"),
    params:
        code=CODE["shortcuts"],
        qualities=QUALITIES,
        sources=TEST_SOURCES,
        dataset=config["source"],
        bootstrap=config["evaluate"]["bootstrap"],
        seed=config["train"]["seed"],
    log:
        f"{OUT}/logs/shortcuts.log",
    message:
        "Shortcut baselines: how well sharpness, detail, file size and image size alone separate each test set"
    conda:
        ENV
    script:
        "../../scripts/shortcuts.py"
