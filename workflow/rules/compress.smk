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


# A test setting (dfpipe.axes: another codec, the re-encoded source video, a perturbation) on the test split's
# crops of one method: one job per method, not per batch, since the test split is a seventh of the videos and a
# job per batch would multiply the full DAG's jobs (and its planning time) by the number of settings. The
# platform path also reads the videos, so only its jobs take the manifest rows they use as a param.
rule compress_setting:
    input:
        faces=lambda wc: batch_files(rules.faces.output.table, method=wc.method),
        manifest=ancient(MANIFEST),
        source=ancient(str(rules.source.output.json)),
    output:
        table=f"{OUT}/compress/{{setting}}/{{method}}.parquet",
    params:
        code=CODE["compress_setting"],
        setting=lambda wc: setting_params(wc.setting),
        videos=lambda wc: method_signature(wc.method) if SETTINGS[wc.setting].kind == "video" else None,
        faces=lambda wc: config["faces"] if SETTINGS[wc.setting].kind == "video" else None,
    log:
        f"{OUT}/logs/compress/{{setting}}/{{method}}.log",
    message:
        "Test setting {wildcards.setting}: the test crops of {wildcards.method}"
    threads: 2
    conda:
        ENV
    script:
        "../../scripts/compress_setting.py"
