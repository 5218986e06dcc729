#!/bin/bash
# htportal worker job (SLURM): {jobs} array tasks, each running {workers_per_job} workers.
# Rendered by the scaler from the pool's template (workers/scaler/templates.py lists the
# placeholders); the scaler sets the job name (htportal-<pool>) on sbatch's command line.
#SBATCH --array=0-{jobs-1}
#SBATCH --ntasks=1
#SBATCH --cpus-per-task={workers_per_job}
#SBATCH --output={log_dir}/slurm-%A_%a.out
#SBATCH --error={log_dir}/slurm-%A_%a.out
{setup}
# HTPORTAL_REDIS_URL comes from the 0600 env file, so the password is neither in this
# script nor on any command line.
set -a
. "{env_file}"
set +a
cd "{work_dir}" || exit 1

pids=""
for i in $(seq 1 {workers_per_job}); do
    python3 "{bundle}" --max-idle {max_idle} --max-runtime {max_runtime} \
        --max-tasks {max_tasks} {queues} &
    pids="$pids $!"
done
# SLURM signals every process of the job on scancel or at the time limit, so the workers get
# their SIGTERM (and give back their tasks) without a trap here. The array task fails with the
# first non-zero exit code among its workers.
status=0
for pid in $pids; do
    wait "$pid" || { code=$?; [ "$status" -eq 0 ] && status=$code; }
done
exit "$status"
