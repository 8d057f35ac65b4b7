# Rules `report_data` / `report_results`: each result table as an HTML page the report shows inline.
from dfpipe import report, runlog

log = runlog.to_file(snakemake.log[0])
for name, csv in snakemake.input.items():
    report.table_page(csv, snakemake.output[name], snakemake.params.titles[name])
    log(f"{csv} -> {snakemake.output[name]}")
