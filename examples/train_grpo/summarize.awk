# Summaries of train_grpo CSV logs.
#   awk -f summarize.awk -v mode=run  log.csv      one line per run: the metrics below
#   awk -f summarize.awk -v mode=ci -v keys="flip auc" runs.txt
#                                                  Markdown cells: mean ± 95% t-interval over the runs
# Run metrics: flip = sign flips / compared rollouts; flip_nz = flips / rollouts with A != 0;
# zero = A == 0 / compared; pmean, pmedian = flips of the mean and of the median baseline on the same
# rollouts / rollouts with r != E[r] (the paired comparison); auc = mean expected reward over all steps; final = mean of the last 20;
# t50 = first step with expected reward >= 0.5 (steps + 1 if never); drawdown = largest fall of the
# expected reward below its running maximum; trm = sequences dropped by the trust region per update.
# With --noise on (docs/reproductions.md (c)), ratios of the step averages over the run (or its
# second half: _late; or the reuse updates: _reuse), K rollouts per prompt:
# bcrit = (tr_inter + tr_intra / K) / |G|^2 prompts, ncrit = K bcrit rollouts,
# intra = (tr_intra / K) / (tr_inter + tr_intra / K), the intra-prompt share of a prompt's noise.
BEGIN { FS = mode == "ci" ? " " : "," }
mode == "run" && FNR == 1 { for (i = 1; i <= NF; ++i) col[$i] = i; next }
mode == "run" {
  n = $col["compared"]; f = $col["flip_frac"] * n; z = $col["zero_adv_frac"] * n
  flips += f; compared += n; zeroed += z
  paired += $col["paired"]; pmean += $col["paired_flips_mean"]; pmedian += $col["paired_flips_median"]
  e = $col["eval_reward"]; steps++; auc += e; last[steps % 20] = e
  if (e > peak) peak = e
  if (peak - e > drawdown) drawdown = peak - e
  if (!t50 && e >= 0.5) t50 = $col["step"]
  trm += $col["trm_masked_seqs"]
  if ("noise_grad_sq" in col) {
    K = $col["rollouts_per_prompt"]
    g[steps] = $col["noise_grad_sq"]; ie[steps] = $col["noise_tr_inter"]; ia[steps] = $col["noise_tr_intra"]
    rg += $col["reuse_grad_sq"]; rie += $col["reuse_tr_inter"]; ria += $col["reuse_tr_intra"]
  }
}
mode == "ci" {
  runs++
  for (i = 1; i < NF; i += 2) { sum[$i] += $(i + 1); sq[$i] += $(i + 1) * $(i + 1) }
}
END {
  if (mode == "run") {
    for (i in last) final += last[i]
    printf "flip %.5f flip_nz %.5f zero %.4f pmean %.5f pmedian %.5f auc %.4f final %.4f t50 %d drawdown %.4f trm %.2f",
           flips / compared, (compared > zeroed ? flips / (compared - zeroed) : 0), zeroed / compared,
           (paired ? pmean / paired : 0), (paired ? pmedian / paired : 0),
           auc / steps, final / length(last), t50 ? t50 : steps + 1, drawdown, trm / steps
    if (K) {  # on the same line: mode=ci reads a line per run
      for (i = 1; i <= steps; ++i) {
        sg += g[i]; se += ie[i]; sa += ia[i]
        if (i > steps / 2) { lg += g[i]; le += ie[i]; la += ia[i] }
      }
      printf " grad %.6g inter %.6g intra_trace %.6g bcrit %.6g ncrit %.6g intra %.5f bcrit_late %.6g bcrit_reuse %.6g",
             sg / steps, se / steps, sa / steps, (se + sa / K) / sg, K * (se + sa / K) / sg, (sa / K) / (se + sa / K),
             (le + la / K) / lg, (rg != 0 ? (rie + ria / K) / rg : 0)
    }
    printf "\n"
    exit
  }
  split("12.706 4.303 3.182 2.776 2.571 2.447 2.365 2.306 2.262 2.228 2.201 2.179", t, " ")  # t(0.975, df)
  n = split(keys, key, " ")
  for (k = 1; k <= n; ++k) {
    m = sum[key[k]] / runs
    v = runs > 1 ? (sq[key[k]] - runs * m * m) / (runs - 1) : 0
    hw = runs > 1 ? t[runs - 1] * sqrt(v > 0 ? v : 0) / sqrt(runs) : 0
    printf " %s ± %s |", fmt(m), fmt(hw)
  }
  printf "\n"
}
function fmt(x) {
  return x >= 100 ? sprintf("%.0f", x) : x >= 1 ? sprintf("%.3g", x) : x >= 0.01 || x == 0 ? sprintf("%.3f", x) : sprintf("%.5f", x)
}
