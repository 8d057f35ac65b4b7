# One rule per split, because each split has its own fixed number of shard files.
for _split, _n in config["shards"]["per_split"].items():

    rule:
        name:
            f"shards_{_split}"
        input:
            tables=lambda wc: batch_files(rules.compress.output.table, quality=wc.quality),
        output:
            tars=expand(f"{OUT}/shards/q{{{{quality}}}}/{_split}-{{i:04d}}.tar", i=range(_n)),
            counts=f"{OUT}/shards/q{{quality}}/{_split}.counts.json",
        params:
            code=CODE["shards"],
            split=_split,
        log:
            f"{OUT}/logs/shards/q{{quality}}/{_split}.log",
        message:
            f"Writing {_n} WebDataset shards of the {_split} split at quality {{wildcards.quality}}"
        conda:
            ENV
        script:
            "../../scripts/shards.py"


rule shard_index:
    input:
        counts=expand(f"{OUT}/shards/q{{{{quality}}}}/{{split}}.counts.json", split=SPLITS),
    output:
        json=f"{OUT}/shards/q{{quality}}/index.json",
    params:
        code=CODE["shard_index"],
    log:
        f"{OUT}/logs/shards/q{{quality}}/index.log",
    message:
        "Indexing the shards of quality {wildcards.quality}"
    conda:
        ENV
    script:
        "../../scripts/shard_index.py"


# A test setting's shards: the test split only, as many tars as the MozJPEG test split has.
rule shards_setting:
    input:
        tables=expand(rules.compress_setting.output.table, method=(ORIGINAL, *config["dataset"]["methods"]), allow_missing=True),
    output:
        tars=expand(f"{OUT}/shards/{{{{setting}}}}/test-{{i:04d}}.tar", i=range(config["shards"]["per_split"]["test"])),
        counts=f"{OUT}/shards/{{setting}}/test.counts.json",
    params:
        code=CODE["shards_setting"],
        setting=lambda wc: setting_params(wc.setting),
    log:
        f"{OUT}/logs/shards/{{setting}}/test.log",
    message:
        "Writing the test shards of setting {wildcards.setting}"
    conda:
        ENV
    script:
        "../../scripts/shards_setting.py"
