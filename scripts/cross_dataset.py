# Rule `cross_dataset`: results/cross_dataset_matrix.csv (train dataset x test dataset x quality -> n, AUC with a
# bootstrap 95% interval over identities, balanced ACC per model) from the detectors' own predictions, their scores on
# each test source and the probes' rows.
import pandas as pd

from dfpipe import runlog
from dfpipe.evaluation import crossdataset
from dfpipe.io import write_csv

log = runlog.to_file(snakemake.log[0])
p = snakemake.params
# bootstrap resamples of the detectors' AUC intervals, as the main metrics table (probe rows bring their own,
# config probes.bootstrap)
n_boot = int(p.bootstrap)
rows = []
own = {(r["detector"], int(r["train_q"])): path for r, path in zip(p.runs, snakemake.input.own, strict=True)}
for name, path, scan in zip(p.sources, snakemake.input.detectors, snakemake.input.scans, strict=True):
    cross = pd.read_parquet(path)
    identities = crossdataset.image_identities(pd.read_parquet(scan))
    for (detector, tq), part in cross.groupby(["detector", "train_quality"], sort=True):
        predictions = pd.read_parquet(own[(detector, int(tq))])
        model = f"{detector}@q{tq}"
        rows += crossdataset.detector_rows(
            predictions, part, p.dataset, name, model, n_boot=n_boot, identities=identities
        )
frames = [pd.DataFrame(rows, columns=crossdataset.MATRIX_COLUMNS)]
frames += [pd.read_parquet(f) for f in snakemake.input.probes]
matrix = pd.concat(frames, ignore_index=True).drop_duplicates()
matrix = matrix.sort_values(["kind", "train_dataset", "test_dataset", "model", "train_quality", "test_quality"])
matrix = crossdataset.mark_shortcuts(matrix, pd.read_csv(snakemake.input.shortcuts))
if matrix["auc"].notna().sum() == 0:
    raise ValueError(f"{snakemake.output.csv}: no row has an AUC; check evaluate.test_sources and the logs above")
write_csv(snakemake.output.csv, matrix)
crossdataset.plot_matrix(matrix, snakemake.output.plot)
log(f"cross-dataset matrix: {len(matrix)} rows")
