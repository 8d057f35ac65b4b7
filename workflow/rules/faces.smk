rule faces:
    input:
        manifest=ancient(MANIFEST),
        # str(): ancient() flags the very object it is given, and rules.source.output.json is the one the manifest
        # checkpoint takes as its input: flagged, the manifest never reran after the source did.
        source=ancient(str(rules.source.output.json)),
    output:
        table=f"{OUT}/faces/{{method}}/b{{batch}}.parquet",
    params:
        code=CODE["faces"],
        videos=batch_signature,
        frames_per_video=frames_for,
        settings=config["faces"],
    log:
        f"{OUT}/logs/faces/{{method}}/b{{batch}}.log",
    message:
        "Decoding evenly spaced frames, detecting, aligning and cropping faces: {wildcards.method} batch {wildcards.batch}"
    threads: 2
    resources:
        mem_mb=2000,
    conda:
        ENV
    script:
        "../../scripts/faces.py"


rule face_summary:
    input:
        tables=lambda wc: batch_files(rules.faces.output.table),
        manifest=MANIFEST,
    output:
        csv=report(f"{RESULTS}/faces/summary.csv", caption="../report/face_summary.rst", category="1. Faces"),
    params:
        code=CODE["face_summary"],
        min_faces=config["faces"]["min_faces_per_video"],
    log:
        f"{OUT}/logs/face_summary.log",
    message:
        "Summarising face detection per video"
    conda:
        ENV
    script:
        "../../scripts/face_summary.py"
