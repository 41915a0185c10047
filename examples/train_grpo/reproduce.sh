#!/usr/bin/env bash
# The measurements of docs/reproductions.md: several seeds per configuration, 95% t-intervals.
#   examples/train_grpo/reproduce.sh [a|b|c|all] [train_grpo options...]
# a: MC-GRPO, median vs mean baseline at G = 2..4 (about 7 min on 2 cores).
# b: off-policy reuse with an engine mismatch (about 13 min).
# c: the critical batch size, on-policy at G = 4, 8, 16 and with reuse (about 5 min).
# The options are added to every run, e.g. --entropy-coef 0.02. Env: BUILD (default build/default),
# OUT (default $BUILD/reproduce, plus the options), SEEDS (default 1..6), JOBS (default nproc).
# Finished runs are kept: a second call only prints the tables.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${BUILD:-$root/build/default}
what=${1:-all}
shift $(($# > 0))
extra=("$@")
suffix=
if [ ${#extra[@]} -gt 0 ]; then suffix=$(printf '_%s' "${extra[@]}" | tr -c 'A-Za-z0-9._\n-' '_'); fi
out=${OUT:-$build/reproduce$suffix}
seeds=${SEEDS:-1 2 3 4 5 6}
export bin=$build/examples/train_grpo
[ -x "$bin" ] || cmake --build "$build" --target train_grpo

# queue DIR ARGS...: one job line per seed: "<csv> <train_grpo args>"
# (no trailing blank: xargs -L would join the next line)
queue() { for s in $seeds; do echo "$out/$1/seed$s.csv --seed $s" ${*:2} ${extra[*]}; done; }
run_one() {  # writes the CSV atomically, so that an interrupted sweep resumes cleanly
  [ -s "$1" ] && return
  mkdir -p "$(dirname "$1")"
  "$bin" --log-every 0 --csv "$1.part" "${@:2}" >/dev/null && mv "$1.part" "$1"
}
export -f run_one
execute() { xargs -P "${JOBS:-$(nproc)}" -L 1 bash -c 'run_one "$@"' _; }
# row DIR KEYS LABEL...: a Markdown row, the labels then the metrics over the seeds
row() {
  local dir=$1 keys=$2
  shift 2
  printf '| %s ' "$@"
  printf '|'
  for f in "$out/$dir"/seed*.csv; do awk -f "$here/summarize.awk" -v mode=run "$f"; done |
    awk -f "$here/summarize.awk" -v mode=ci -v keys="$keys"
}

if [ "$what" = a ] || [ "$what" = all ]; then
  # mean with G and G + 1 rollouts (the median's sampling budget); median with G + 1, pivot dropped
  for scale in group none; do
    for n in 2 3 4 5; do queue "a/$scale/mean-$n" --steps 600 --adv-scale $scale --group-size $n --baseline mean; done
    for G in 2 3 4; do queue "a/$scale/median-$G" --steps 600 --adv-scale $scale --group-size $G --baseline median; done
  done | execute
  arms() {  # G scale -> the rows of one G and scale: dir, baseline, rollouts per prompt
    echo "mean-$1 mean $1"
    echo "median-$1 median $(($1 + 1))"
    echo "mean-$(($1 + 1)) mean $(($1 + 1))"
  }
  echo "Sign flips against r - E[r | prompt] (own: the run's baseline; paired: both baselines on the run's rollouts)"
  echo
  echo "| G | scale | baseline | rollouts/prompt | own flips / compared | own flips / (A != 0) | own A = 0 | paired: mean flips | paired: median flips |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for G in 2 3 4; do for scale in group none; do
    arms $G | while read -r dir b n; do row "a/$scale/$dir" "flip flip_nz zero pmean pmedian" $G $scale $b $n; done
  done; done
  echo
  echo "Learning (exact expected reward on the held-out prompts; 601 = never within 600 steps)"
  echo
  echo "| G | scale | baseline | rollouts/prompt | step E[r] >= 0.5 | mean E[r] over 600 steps | final E[r] |"
  echo "|---|---|---|---|---|---|---|"
  for G in 2 3 4; do for scale in group none; do
    arms $G | while read -r dir b n; do row "a/$scale/$dir" "t50 auc final" $G $scale $b $n; done
  done; done
fi

if [ "$what" = b ] || [ "$what" = all ]; then
  mismatches=("exact:--mismatch 0" "dense:--mismatch 1" "sparse:--mismatch 16 --mismatch-rate 0.02")
  arms=("none:" "trust_region:--mask trust_region" "token_truncate:--is token_truncate")
  for K in 0 3; do
    for m in "${mismatches[@]}"; do
      for a in "${arms[@]}"; do
        [ "${m%%:*}" = exact ] && [ "${a%%:*}" != none ] && continue  # nothing to correct
        queue "b/K$K-${m%%:*}/${a%%:*}" --steps 400 --off-policy-steps $K ${m#*:} ${a#*:}
      done
    done
  done | execute
  keys="final auc t50 drawdown trm"
  echo "| K | mismatch | correction | final E[r] | mean E[r] | step E[r] >= 0.5 | drawdown | TRM-dropped seqs / update |"
  echo "|---|---|---|---|---|---|---|---|"
  for K in 0 3; do
    for m in "${mismatches[@]}"; do
      for a in "${arms[@]}"; do
        if [ -d "$out/b/K$K-${m%%:*}/${a%%:*}" ]; then row "b/K$K-${m%%:*}/${a%%:*}" "$keys" "$K" "${m%%:*}" "${a%%:*}"; fi
      done
    done
  done
fi

if [ "$what" = c ] || [ "$what" = all ]; then
  # the critical batch size: the LM head's gradient noise at every update (--noise on), on-policy at
  # G = 4, 8, 16 and with off-policy reuse (K = 3) at G = 8, no engine mismatch
  {
    for G in 4 8 16; do queue "c/G$G-K0" --steps 400 --group-size $G --mismatch 0 --noise on; done
    queue "c/G8-K3" --steps 400 --group-size 8 --off-policy-steps 3 --mismatch 0 --noise on
  } | execute
  echo "| G | K | \|G\|² | tr Σ_inter | tr Σ_intra | intra share | B_crit (prompts) | N_crit (rollouts) | B_crit, 2nd half | B_crit, reuse updates | final E[r] |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  for arm in "4 0" "8 0" "16 0" "8 3"; do
    set -- $arm
    row "c/G$1-K$2" "grad inter intra_trace intra bcrit ncrit bcrit_late bcrit_reuse final" "$1" "$2"
  done
fi
