# Grad-CAM grids of every model trained on all methods, one per test quality: the most confident reals and
# fakes and the worst errors at the model's validation threshold (hence the predictions as input). The model
# file alone describes the model (spec, ELA), as for predict.
rule gradcam:
    input:
        model=rules.train.output.best,
        predictions=rules.predict.output.table,
        test=[shard for q in QUALITIES for shard in shard_files(q, "test")],
    output:
        grids=[report(f"{RESULTS}/gradcam/{{detector}}/q{{train_q}}-{{train_methods}}/q{q}.png",
                      caption="../report/gradcam.rst", category="3. Detection", subcategory="Grad-CAM")
               for q in QUALITIES],
    params:
        code=CODE["gradcam"],
        qualities=QUALITIES,
        device=TRAIN_DEVICE,
    log:
        f"{OUT}/logs/gradcam/{{detector}}/q{{train_q}}-{{train_methods}}.log",
    message:
        "Grad-CAM grids of {wildcards.detector} (trained at q{wildcards.train_q}, {wildcards.train_methods})"
    threads: 2
    resources:
        **gpu_job(),
    conda:
        ENV
    script:
        "../../scripts/gradcam.py"
