#!/usr/bin/env bash
# A small sweep: every baseline x 3 seeds, then a PNG of the reward curves (docs/train_grpo_sweep.png).
#   examples/train_grpo/sweep.sh [train_grpo options...]      (under a minute on 2 cores)
# The options are passed to every run, e.g. --off-policy-steps 1. Env: BUILD (default
# build/default), OUT (default $BUILD/sweep), PNG (default docs/train_grpo_sweep.png), JOBS.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD:-$root/build/default}
out=${OUT:-$build/sweep}
png=${PNG:-$root/docs/train_grpo_sweep.png}
baselines=(mean median leave_one_out ess_scaled)
seeds=(1 2 3)

if [ ! -x "$build/examples/train_grpo" ]; then
  [ -f "$build/CMakeCache.txt" ] || cmake --preset default -S "$root"
  cmake --build "$build" --target train_grpo
fi
if ! command -v gnuplot >/dev/null; then
  sudo=$([ "$(id -u)" = 0 ] || echo sudo)
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq gnuplot-nox
fi

mkdir -p "$out"
export bin=$build/examples/train_grpo out
start=$SECONDS
for b in "${baselines[@]}"; do for s in "${seeds[@]}"; do echo "$b $s"; done; done |
  xargs -P "${JOBS:-$(nproc)}" -L 1 bash -c '"$bin" --baseline "$0" --seed "$1" --log-every 0 --csv "$out/$0-$1.csv" "${@:2}" | tail -1 | sed "s/^/$0 seed $1: /"' "$@"
echo "sweep: $((SECONDS - start)) s"

# Per baseline and step: mean, min and max over the seeds of the exact expected reward.
for b in "${baselines[@]}"; do
  files=()
  for s in "${seeds[@]}"; do files+=("$out/$b-$s.csv"); done
  awk -F, 'FNR == 1 { next } { n[$1]++; sum[$1] += $5; if (!($1 in lo) || $5 < lo[$1]) lo[$1] = $5; if ($5 > hi[$1]) hi[$1] = $5 }
           END { for (t = 1; t in n; ++t) print t, sum[t] / n[t], lo[t], hi[t] }' "${files[@]}" >"$out/$b.dat"
done

curves=()
for i in "${!baselines[@]}"; do
  dat="$out/${baselines[$i]}.dat"
  curves+=("\"$dat\" using 1:3:4 with filledcurves lc $((i + 1)) fs transparent solid 0.15 notitle")
  curves+=("\"$dat\" using 1:2 with lines lc $((i + 1)) lw 2 title \"${baselines[$i]}\"")
done
plot=$(IFS=,; echo "${curves[*]}")
gnuplot <<EOF
set terminal pngcairo noenhanced size 900,540 font ",11"
set output "$png"
set title "train_grpo ${*:-(default flags)}: expected reward on 256 held-out prompts, mean and range over ${#seeds[@]} seeds"
set xlabel "step"
set ylabel "exact expected reward"
set yrange [0:1.02]
set key top left
set grid
plot $plot
EOF
echo "wrote $png"
