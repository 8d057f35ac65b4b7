#!/usr/bin/env bash
# Submit command of profiles/cluster-generic when no batch system is at hand: runs Snakemake's job script in
# the background on this machine and prints a job id, as qsub/bsub/sbatch --parsable do. Snakemake then waits
# for the script's finished/failed marker files. With CLUSTER_SUBMIT_LOG set, each job's properties
# (rule(s), threads, resources) are appended to that file, which is what a real submit command would read.
set -euo pipefail
jobscript="${!#}"
logs=.snakemake/cluster-generic-logs
mkdir -p "$logs"
id="local-$$-$RANDOM"
if [[ -n "${CLUSTER_SUBMIT_LOG:-}" ]]; then
    grep -m1 '^# properties = ' "$jobscript" | sed 's/^# properties = //' >> "$CLUSTER_SUBMIT_LOG"
fi
# Output goes to a file: Snakemake reads the job id from this command's stdout until it closes.
nohup bash "$jobscript" > "$logs/$id.log" 2>&1 < /dev/null &
echo "$id"
