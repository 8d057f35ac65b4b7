# FaceForensics++ (or the offline demo) -> face crops -> MozJPEG at each quality -> PSNR/SSIM -> WebDataset shards
# -> detectors trained per quality -> predictions -> result tables and plots.
# Stages live in workflow/rules/<stage>.smk; their logic in src/dfpipe/<stage>.py; see docs/DESIGN.md.
# Frames are decoded inside the faces jobs (streamed, one pass per video), so they have no rule file of their own.
import re

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"

wildcard_constraints:
    method="|".join((ORIGINAL, *METHODS)),
    batch=r"\d{4}",
    quality=r"\d{1,3}",
    split="|".join(SPLITS),
    train_q=r"\d{1,3}",
    train_methods="|".join(("all", *METHODS)),
    detector="|".join(DETECTORS),
    setting="|".join(re.escape(name) for name in SETTINGS) or "(?!)",  # no test setting: nothing matches


include: "workflow/rules/source.smk"
include: "workflow/rules/manifest.smk"
include: "workflow/rules/faces.smk"
include: "workflow/rules/compress.smk"
include: "workflow/rules/fidelity.smk"
include: "workflow/rules/shards.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/gradcam.smk"
include: "workflow/rules/test_sources.smk"
include: "workflow/rules/shortcuts.smk"
include: "workflow/rules/probes.smk"
include: "workflow/rules/report.smk"


# The data path alone: everything up to the shards and the fidelity (PSNR/SSIM) report (no training).
rule data:
    input:
        rules.face_summary.output.csv,
        rules.fidelity_report.output.csv,
        expand(rules.shard_index.output.json, quality=QUALITIES),
        # the test settings' shards and PSNR/SSIM (compress.codecs, compress.platform, perturb)
        expand(rules.shards_setting.output.counts, setting=SETTINGS),
        expand(rules.fidelity_setting.output.table, setting=SETTINGS),


rule all:
    default_target: True
    input:
        rules.tables.output.auc,
        rules.data.input,
        # the result tables as pages the report shows inline
        rules.report_data.output,
        rules.report_results.output,
        # Grad-CAM grids of every model trained on all methods (not the ablation's variants)
        [grid for r in RUNS if r.methods == "all" and r.detector in DETECTORS
         for grid in expand(rules.gradcam.output.grids, detector=r.detector, train_q=r.quality, train_methods="all")],
        # the probe table when probes are configured; the cross-dataset matrix when evaluate.test_sources are
        rules.probes.output if PROBES else [],
        rules.cross_dataset.output if TEST_SOURCES else [],
        rules.test_source_fidelity_report.output if TEST_SOURCES else [],
        rules.shortcuts.output,
        # codecs, platform re-encodes and perturbations beside MozJPEG, when configured
        rules.bitrate.output if SETTINGS else [],
