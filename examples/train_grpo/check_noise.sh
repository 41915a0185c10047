#!/usr/bin/env bash
# --noise on wired through: every step logs finite noise components of the fresh update and of the
# reuse updates, with a positive intra-prompt trace, and summarize.awk turns them into finite
# critical batch sizes (early in training |G|^2 is small and its unbiased estimate may be negative).   check_noise.sh TRAIN_GRPO OUT_DIR [train_grpo options...]
set -euo pipefail
bin=$1 out=$2
shift 2
mkdir -p "$out"
"$bin" --log-every 0 --noise on --off-policy-steps 1 --mismatch 0 --csv "$out/noise.csv" "$@"
awk -F, 'NR == 1 { for (i = 1; i <= NF; ++i) col[$i] = i; next }
  { for (k in want) { v = $col[want[k]]; if (v != v + 0 || v == "inf" || v == "nan") { print "not finite: " want[k] " at step " $1; bad = 1 } }
    if (!($col["noise_tr_intra"] > 0) || !($col["reuse_tr_intra"] > 0)) { print "tr_intra <= 0 at step " $1; bad = 1 }
    rows++ }
  BEGIN { split("noise_grad_sq noise_tr_inter noise_tr_intra reuse_grad_sq reuse_tr_inter reuse_tr_intra", want, " ") }
  END { if (rows == 0) { print "no rows"; bad = 1 }; exit bad }' "$out/noise.csv"
here=$(cd "$(dirname "$0")" && pwd)
summary=$(awk -f "$here/summarize.awk" -v mode=run "$out/noise.csv")
echo "$summary"
echo "$summary" | awk '{ for (i = 1; i < NF; i += 2) v[$i] = $(i + 1) }
  END { for (k in v) if (k ~ /crit/ && (v[k] != v[k] + 0 || v[k] ~ /nan|inf/ || v[k] == 0)) { print "bad " k; exit 1 } }'
