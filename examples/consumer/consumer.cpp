// A downstream program: a user-defined baseline in a custom policy, advantages and the fused loss.
#include <cmath>
#include <cstdio>
#include <vector>

#include <grpokit/grpokit.hpp>

// The group's mid-range as the baseline and its half-range as the spread: A lies in [-1, 1].
struct mid_range {
  using policy_axis = grpokit::axis::baseline;
  static double center(grpokit::group_io& g, const grpokit::advantage_config&) {
    double lo = g.rewards[0], hi = g.rewards[0];
    for (std::int64_t i = 1; i < g.n; ++i) {
      lo = std::fmin(lo, g.rewards[i]);
      hi = std::fmax(hi, g.rewards[i]);
    }
    for (std::int64_t i = 0; i < g.n; ++i) g.centered[i] = g.rewards[i] - (lo + hi) / 2;
    return (hi - lo) / 2;
  }
};

// Axes in any order; double accumulation, so the spans below hold double.
using P =
    grpokit::policy<mid_range, grpokit::precision<float, double>, grpokit::reduction::batch_invariant,
                    grpokit::mask::all_of<grpokit::mask::trust_region, grpokit::mask::importance>, grpokit::chunk<64>>;

int main() {
  int failures = 0;
  auto expect = [&](bool ok, const char* what) {
    if (!ok) {
      std::fprintf(stderr, "consumer: FAILED %s\n", what);
      ++failures;
    }
  };

  // Two groups: rewards {0, 0.5, 1, 1} (mid 0.5, half-range 0.5) and {0.2, 0.8} (mid 0.5, 0.3).
  const std::vector<double> rewards{0, 0.5, 1, 1, 0.2, 0.8}, want{-1, 0, 1, 1, -1, 1};
  const std::vector<std::int64_t> group_offsets{0, 4, 6};
  std::vector<double> adv(rewards.size());
  std::vector<std::uint8_t> seq_mask(rewards.size());
  grpokit::loss_config cfg;
  grpokit::host::compute_advantages<P>({rewards, group_offsets, {}, {}}, cfg.adv, {adv, seq_mask});
  for (std::size_t i = 0; i < adv.size(); ++i) expect(std::fabs(adv[i] - want[i]) < 1e-5, "mid_range advantage");

  // Six sequences of 1..6 tokens over a vocabulary of 100. The rollout engine's log-probs are off
  // by 0.05, except for one token of sequence 4 whose ratio leaves [0.5, 2] (the importance mask drops
  // the token) and one of sequence 5 with |log ratio| = 0.6 > 0.5 (the trust region drops the sequence).
  const std::int64_t V = 100;
  std::vector<std::int64_t> seq_offsets{0};
  for (std::int64_t s = 0; s < 6; ++s) seq_offsets.push_back(seq_offsets.back() + s + 1);
  const std::int64_t T = seq_offsets.back();
  std::vector<float> logits(static_cast<std::size_t>(T * V)), dlogits(logits.size());
  std::vector<std::int64_t> targets(static_cast<std::size_t>(T));
  for (std::int64_t t = 0; t < T; ++t) {
    targets[static_cast<std::size_t>(t)] = (7 * t) % V;
    for (std::int64_t v = 0; v < V; ++v)
      logits[static_cast<std::size_t>(t * V + v)] = static_cast<float>(std::sin(0.37 * static_cast<double>(t * V + v)));
  }
  const grpokit::logits_input<float, double> in{{logits.data(), T, V, V}, targets, {}};
  std::vector<double> logp_old(static_cast<std::size_t>(T)), lse(static_cast<std::size_t>(T));
  grpokit::host::token_logprobs<P>(in, cfg, {logp_old, {}, lse});
  std::vector<double> logp_rollout(logp_old);
  for (double& x : logp_rollout) x -= 0.05;
  logp_rollout[static_cast<std::size_t>(seq_offsets[4])] -= 1.0;
  logp_rollout[static_cast<std::size_t>(seq_offsets[5])] -= 0.55;
  cfg.trm_max_threshold = 0.5;

  grpokit::rollout_batch<double> batch;
  batch.seq_offsets = seq_offsets;
  batch.adv = adv;
  batch.logp_old = logp_old;
  batch.logp_rollout = logp_rollout;
  batch.seq_mask = seq_mask;
  const grpokit::loss_result res = grpokit::host::fused_loss<P>(in, batch, cfg, {dlogits.data(), T, V, V});
  expect(std::isfinite(res.loss), "finite loss");
  expect(res.metrics.masked_tokens_importance == 1, "importance mask drops one token of sequence 4");
  expect(res.metrics.masked_seqs_trust_region == 1, "trust region drops sequence 5");
  double worst = 0;  // every row of d loss / d logits sums to 0 (softmax)
  for (std::int64_t t = 0; t < T; ++t) {
    double sum = 0;
    for (std::int64_t v = 0; v < V; ++v) sum += dlogits[static_cast<std::size_t>(t * V + v)];
    worst = std::fmax(worst, std::fabs(sum));
  }
  expect(worst < 1e-6, "dlogits rows sum to 0");

  std::printf("consumer: loss %.6f, %lld tokens kept of %lld, %lld sequence(s) dropped by the trust region\n", res.loss,
              static_cast<long long>(res.metrics.tokens_kept), static_cast<long long>(res.metrics.tokens),
              static_cast<long long>(res.metrics.masked_seqs_trust_region));
  return failures == 0 ? 0 : 1;
}
