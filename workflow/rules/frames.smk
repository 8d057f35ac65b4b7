rule frames:
    input:
        manifest=ancient(MANIFEST),
    output:
        plan=f"{OUT}/frames/{{method}}/b{{batch}}.parquet",
    params:
        videos=batch_signature,
        per_video=frames_for,
    log:
        f"{OUT}/logs/frames/{{method}}/b{{batch}}.log",
    message:
        "Planning {params.per_video} evenly spaced frames per video: {wildcards.method} batch {wildcards.batch}"
    conda:
        ENV
    script:
        "../../scripts/frames.py"
