#!/usr/bin/env bash
# compare_data_parallel.sh MPIEXEC TRAIN_GRPO WORKDIR [train_grpo options...]
# Runs the trainer data parallel (--parallel mpi) on 1, 2 and 3 ranks over the same global batches
# and requires the same per-step log (every column but the wall time) and the same final
# parameters, byte for byte.
set -euo pipefail
mpiexec=$1 exe=$2 work=$3
shift 3
mkdir -p "$work"
for np in 1 2 3; do
  "$mpiexec" -n "$np" "$exe" --parallel mpi --log-every 0 --csv "$work/np$np.csv" --params-out "$work/np$np.params" "$@"
  cut -d, -f1,3- "$work/np$np.csv" > "$work/np$np.metrics"  # without time_s
done
status=0
for np in 2 3; do
  if ! cmp "$work/np1.metrics" "$work/np$np.metrics"; then
    echo "per-step metrics differ between 1 and $np ranks:"; diff "$work/np1.metrics" "$work/np$np.metrics" | head; status=1
  fi
  if ! cmp "$work/np1.params" "$work/np$np.params"; then
    echo "final parameters differ between 1 and $np ranks"; status=1
  fi
done
steps=$(($(wc -l < "$work/np1.metrics") - 1))
[ "$steps" -ge 5 ] || { echo "expected >= 5 logged steps, got $steps"; status=1; }
[ -s "$work/np1.params" ] || { echo "no parameters written"; status=1; }
[ $status -eq 0 ] && echo "data parallel: $steps steps, metrics and parameters bitwise equal on 1, 2 and 3 ranks"
exit $status
