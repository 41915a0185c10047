#!/usr/bin/env bash
# Trains with the loss side on the CPU (grpokit::host) and on the GPU (grpokit::device), same binary,
# seed and flags, and checks that every per-step metric of the two CSV logs agrees within tolerance.
#   compare_backends.sh [--runner CMD] TRAIN_GRPO WORK_DIR [train_grpo flags...]
# --runner runs the binary through CMD (the simulated GPU's `run`, which works in a folder of its
# own). The GPU run exits 77 without a GPU (CTest SKIP_RETURN_CODE). The two paths round
# differently (the device reduces in another order), so the trajectories drift apart slowly: keep
# the runs short.
set -u
runner=()
if [ "${1:-}" = --runner ]; then runner=("$2"); shift 2; fi
[ $# -ge 2 ] || { echo "usage: $0 [--runner CMD] TRAIN_GRPO WORK_DIR [flags...]" >&2; exit 2; }
bin=$1
mkdir -p "$2" && work=$(cd "$2" && pwd) || exit 2
shift 2
for device in cpu cuda; do
  rm -f "$work/$device.csv"
  "${runner[@]}" "$bin" --device "$device" --csv "$work/$device.csv" --log-every 1 "$@"
  rc=$?
  [ $rc -eq 0 ] || { echo "compare_backends: the $device run exited $rc" >&2; exit $rc; }
done

# Every column but time_s: counts (step, compared, paired, paired_flips_*) equal, the others
# |cpu - gpu| <= atol + rtol |cpu| (the logs print 5-6 digits). A field that is not a finite
# number fails, as do logs with different headers or step counts, or no steps at all.
awk -F, -v atol=2e-4 -v rtol=2e-3 '
  function abs(x) { return x < 0 ? -x : x }
  function number(x) { return x ~ /^-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?$/ }
  function fail(msg) { print "compare_backends: " msg; bad = 1 }
  FNR == 1 && NR == 1 { header = $0; for (i = 1; i <= NF; ++i) name[i] = $i; next }
  FNR == 1 { if ($0 != header) fail("the two logs have different columns"); next }
  NR == FNR { cpu[FNR] = $0; rows = FNR; next }
  {
    seen = FNR
    if (!(FNR in cpu)) { fail("the GPU log has more steps"); exit }
    n = split(cpu[FNR], c, ",")
    if (n != NF) { fail("step " $1 ": column counts differ"); exit }
    for (i = 1; i <= NF; ++i) {
      if (name[i] == "time_s") continue
      if (!number($i) || !number(c[i])) { fail("step " $1 ", " name[i] ": not a finite number: cpu " c[i] ", gpu " $i); continue }
      d = abs($i - c[i])
      if (d > worst[i]) worst[i] = d
      exact = name[i] ~ /^(step|compared|paired|paired_flips_mean|paired_flips_median)$/
      if (exact ? d != 0 : d > atol + rtol * abs(c[i]))
        fail(sprintf("step %s, %s: cpu %s, gpu %s", $1, name[i], c[i], $i))
    }
  }
  END {
    if (rows < 2) fail("the CPU log has no steps")
    if (seen != rows) fail("the logs have different step counts")
    printf "compare_backends: %d steps; largest |cpu - gpu| per column:", rows > 1 ? rows - 1 : 0
    for (i = 2; i in name; ++i) if (name[i] != "time_s") printf " %s %.3g", name[i], worst[i]
    printf "\n"
    exit bad
  }' "$work/cpu.csv" "$work/cuda.csv"
