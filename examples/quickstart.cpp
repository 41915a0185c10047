// grpokit quick start: a GRPO loss and its gradient on a small packed batch, on the host.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include <grpokit/grpokit.hpp>

int main() {
  using preset = grpokit::presets::grpo;
  using P = preset::policy<>;  // fp32 storage and accumulation, deterministic reduction
  grpokit::loss_config cfg = preset::config();

  // 2 prompts x 4 rollouts; rollout s has 3 + s response tokens; vocabulary of 50.
  const std::int64_t prompts = 2, group = 4, V = 50;
  std::vector<std::int64_t> group_offsets{0, group, 2 * group};
  std::vector<std::int64_t> seq_offsets{0};
  for (std::int64_t s = 0; s < prompts * group; ++s) seq_offsets.push_back(seq_offsets.back() + 3 + s);
  const std::int64_t S = prompts * group, T = seq_offsets.back();

  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.f, 2.f);
  std::uniform_int_distribution<std::int64_t> token(0, V - 1);
  std::vector<float> logits(static_cast<std::size_t>(T * V)), rewards{1, 0, 0, 1, 0, 0, 0, 1};
  for (auto& x : logits) x = normal(rng);
  std::vector<std::int64_t> targets(static_cast<std::size_t>(T));
  for (auto& t : targets) t = token(rng);
  // The old and reference policies: the current one, slightly perturbed.
  std::vector<float> logp_old(static_cast<std::size_t>(T)), logp_ref(static_cast<std::size_t>(T)),
      lse(static_cast<std::size_t>(T));
  grpokit::host::token_logprobs<P>({{logits.data(), T, V, V}, targets, {}}, cfg, {logp_old, {}, lse});
  std::normal_distribution<float> jitter(0.f, 0.05f);
  for (std::int64_t t = 0; t < T; ++t) {
    logp_ref[t] = logp_old[t] + jitter(rng);
    logp_old[t] += jitter(rng);
  }

  // 1. group advantages
  std::vector<float> adv(static_cast<std::size_t>(S));
  std::vector<std::uint8_t> seq_mask(static_cast<std::size_t>(S));
  const auto adv_stats = grpokit::host::compute_advantages<P>({rewards, group_offsets, {}, {}}, cfg.adv,
                                                              {adv, seq_mask});
  // 2. loss and d loss / d logits in one call
  std::vector<float> dlogits(logits.size());
  grpokit::rollout_batch<float> batch;
  batch.seq_offsets = seq_offsets;
  batch.adv = adv;
  batch.logp_old = logp_old;
  batch.logp_ref = logp_ref;
  batch.seq_mask = seq_mask;
  const grpokit::loss_result res =
      grpokit::host::fused_loss<P>({{logits.data(), T, V, V}, targets, {}}, batch, cfg, {dlogits.data(), T, V, V});

  const auto& m = res.metrics;
  std::printf("GRPO on %lld tokens, %lld sequences, vocabulary %lld\n", static_cast<long long>(T),
              static_cast<long long>(S), static_cast<long long>(V));
  std::printf("advantages: mean %.4f std %.4f, zero-variance groups %lld\n", adv_stats.adv_mean, adv_stats.adv_std,
              static_cast<long long>(adv_stats.zero_variance_groups));
  std::printf("loss %.6f  (pg %.6f, kl %.6f)\n", res.loss, m.loss_pg, m.loss_kl);
  std::printf("clip fraction low %.3f high %.3f dual %.3f\n", m.clip_frac_low, m.clip_frac_high, m.clip_frac_dual);
  std::printf("approx KL to old %.5f, k3 KL to ref %.5f, entropy %.4f\n", m.approx_kl_old, m.kl_ref, m.entropy_mean);
  double norm = 0;
  for (float g : dlogits) norm += static_cast<double>(g) * g;
  std::printf("tokens kept %lld of %lld, |dloss/dlogits| = %.6f\n", static_cast<long long>(m.tokens_kept),
              static_cast<long long>(m.tokens), std::sqrt(norm));
  return 0;
}
