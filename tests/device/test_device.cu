// The device path against the host path (the oracle): bitwise under batch_invariant for logp,
// entropy, lse and dlogits; within tolerance otherwise; data errors reported through the status.
#include <cfloat>
#include <limits>
#include <random>

#include "../catch.hpp"
#include "device_support.cuh"

using device_support::buffer;
using device_support::device_problem;
using device_support::reference_gemm;
using device_support::sized;

namespace {

ref::problem make(std::uint64_t seed, std::vector<std::int64_t> lengths, std::int64_t V, bool per_token_temp) {
  std::mt19937_64 rng(seed);
  ref::problem p = ref::make_problem(rng, lengths, V, 2.5);
  if (per_token_temp) {
    std::uniform_real_distribution<double> u(0.5, 1.5);
    for (std::int64_t t = 0; t < p.T; ++t) p.temperature.push_back(static_cast<float>(u(rng)));
  }
  return p;
}

std::vector<std::int64_t> lengths_for(std::int64_t T) {
  std::vector<std::int64_t> l;
  for (std::int64_t left = T, k = 1; left > 0; ++k) {
    const std::int64_t n = std::min<std::int64_t>(left, 1 + (k * 7) % 13);
    l.push_back(n);
    left -= n;
  }
  return l;
}

template <class P>
void forward_matches_host(std::int64_t T, std::int64_t V, bool per_token_temp, bool bitwise) {
  using R = grpokit::accum_t<P>;
  const ref::problem p = make(static_cast<std::uint64_t>(T * 131 + V), lengths_for(T), V, per_token_temp);
  grpokit::loss_config cfg;
  cfg.prune_rho = 0.02;
  cfg.temperature = per_token_temp ? 1.0 : 0.8;
  auto h = support::host_run<P>{};
  h.logits = support::to_storage<grpokit::storage_t<P>>(p.logits);
  h.temperature = support::cast<R>(p.temperature);
  std::vector<R> logp(p.T), ent(p.T), lse(p.T);
  grpokit::host::token_logprobs<P>(h.input(p), cfg, {logp, ent, lse});
  device_problem<P> d(p);
  buffer<R> dlogp(p.T), dent(p.T), dlse(p.T);
  grpokit::device::token_logprobs<P>(d.input(), cfg, {dlogp.span(), dent.span(), dlse.span()}, d.ws(), d.ws_bytes());
  grpokit::device::throw_if_error(grpokit::device::read_status(d.ws(), 0));
  INFO("T = " << T << " V = " << V << " chunk " << P::chunk_size);
  if (bitwise) {
    CHECK(support::same_bits(dlogp.host(), logp));
    CHECK(support::same_bits(dent.host(), ent));
    CHECK(support::same_bits(dlse.host(), lse));
  } else {
    const auto a = dlogp.host(), b = dent.host(), c = dlse.host();
    for (std::int64_t t = 0; t < p.T; ++t) {
      if (std::isinf(logp[t])) {
        CHECK(a[t] == logp[t]);
        continue;
      }
      CHECK(support::close(a[t], logp[t], 1e-5, 1e-5));
      CHECK(support::close(b[t], ent[t], 1e-5, 1e-5));
      CHECK(support::close(c[t], lse[t], 1e-5, 1e-5));
    }
  }
}

template <class S, class R, class... Extra>
using bi = grpokit::policy<grpokit::precision<S, R>, grpokit::reduction::batch_invariant, Extra...>;

}  // namespace

TEST_CASE("device token_logprobs: bitwise the host rows under batch_invariant, every schedule", "[device]") {
  // warp per row (V <= 4096), block per row (V > 4096 and not split), split rows (T <= 256, >= 16
  // tiles); the small sizes keep each schedule (fewer rows, the same V).
  forward_matches_host<bi<float, float, grpokit::chunk<16>>>(9, 7, false, true);
  forward_matches_host<bi<float, float, grpokit::chunk<16>>>(1, 1, true, true);
  forward_matches_host<bi<float, float, grpokit::chunk<64>>>(8, 4097, true, true);
  forward_matches_host<bi<float, float>>(sized(300, 6), 5000, false, true);
  forward_matches_host<bi<double, double, grpokit::chunk<256>>>(5, 4099, false, true);
  forward_matches_host<bi<__nv_bfloat16, float, grpokit::chunk<256>>>(8, 4097, true, true);
  forward_matches_host<bi<__nv_bfloat16, float>>(sized(270, 5), 8191, false, true);
  forward_matches_host<bi<__half, float, grpokit::chunk<1024>, grpokit::mask::vocab_prune>>(sized(12, 3), 33000, true,
                                                                                           true);
  forward_matches_host<bi<float, float, grpokit::chunk<16>, grpokit::mask::vocab_prune>>(40, 300, false, true);
  // warp per row with several lanes per thread (L = 256, G = 32): the in-thread tree steps
  forward_matches_host<bi<float, float>>(sized(20, 6), 3000, true, true);
  // vocabulary pruning on the block-per-row and warp-per-row schedules
  forward_matches_host<bi<float, float, grpokit::mask::vocab_prune>>(sized(300, 5), 5000, false, true);
  forward_matches_host<bi<float, float, grpokit::chunk<256>, grpokit::mask::vocab_prune>>(sized(300, 9), 3000, true,
                                                                                         true);
}

// A packed batch of about T tokens over V = 3 with the current policy's log-probs and entropies,
// and the old, reference and rollout log-probs near them: policy_loss's inputs.
struct policy_inputs {
  ref::problem p;
  std::vector<double> logp, ent;
  policy_inputs(std::uint64_t seed, std::int64_t T) {
    std::mt19937_64 rng(seed);
    p = ref::make_problem(rng, lengths_for(T), 3, 1.0);
    std::uniform_real_distribution<double> u(-3, -0.01), h(0.1, 2);
    for (std::int64_t t = 0; t < p.T; ++t) logp.push_back(u(rng));
    for (std::int64_t t = 0; t < p.T; ++t) ent.push_back(h(rng));
    ref::add_policies(rng, p, support::cast<ref::ld>(logp), 0.3);
  }
};

TEST_CASE("device policy_loss on its own, empty batches, and a workspace planned for a larger shape", "[device]") {
  using P = grpokit::policy<grpokit::precision<double, double>, grpokit::mask::trust_region>;
  grpokit::loss_config cfg = grpokit::presets::grpo::config();
  cfg.trm_max_threshold = 0.4;
  cfg.entropy_coef = 0.02;
  cfg.opsm_threshold = 0.02;
  const policy_inputs in(4, 60);
  const ref::problem& p = in.p;
  const std::vector<double>&logp = in.logp, &ent = in.ent;
  support::host_run<P> hr;
  support::load_batch(hr, p);
  std::vector<double> hd(p.T), he(p.T);
  const auto want = grpokit::host::policy_loss<P>({logp, ent}, hr.batch(p), cfg, {hd, he});
  device_problem<P> d(p);
  buffer<double> dl(logp), de(ent), gd(p.T), ge(p.T);
  // a workspace planned for a much larger problem works for this one
  buffer<unsigned char> big(grpokit::device::workspace_bytes<P>({4096, 152064, 512}));
  const auto got = grpokit::device::policy_loss<P>({dl.cspan(), de.cspan()}, d.batch(), cfg, {gd.span(), ge.span()},
                                                   big.data(), big.size());
  CHECK(support::close(got.loss, want.loss, 1e-12, 1e-14));
  CHECK(got.metrics.masked_seqs_trust_region == want.metrics.masked_seqs_trust_region);
  CHECK(want.metrics.masked_seqs_opsm > 0);  // OPSM bites
  CHECK(got.metrics.masked_seqs_opsm == want.metrics.masked_seqs_opsm);
  const auto g1 = gd.host(), g2 = ge.host();
  for (std::int64_t t = 0; t < p.T; ++t) {
    CHECK(support::close(g1[t], hd[t], 1e-12, 1e-15));
    CHECK(support::close(g2[t], he[t], 1e-12, 1e-15));
  }
  // T == 0, S == 0: loss 0; S == 0 with T > 0 is an error, as on the host
  buffer<double> none(0);
  buffer<std::int64_t> zero(std::vector<std::int64_t>{0});
  grpokit::rollout_batch<double> empty;
  empty.seq_offsets = zero.cspan();
  CHECK(grpokit::device::policy_loss<P>({none.cspan(), {}}, empty, {}, {none.span(), {}}, big.data(), big.size()).loss == 0);
  REQUIRE_ERROR((grpokit::device::policy_loss<P>({dl.cspan(), {}}, empty, {}, {gd.span(), {}}, big.data(), big.size())),
                "last offset must be");
}

namespace {
// token_logprobs, logits_backward and fused_loss under top_k / top_p on the device against the host
// (the support thresholds: the same integer histograms; bitwise under batch_invariant).
template <class P>
void support_rows_match_host(std::uint64_t seed, std::int64_t T, std::int64_t V, std::int64_t k, double p) {
  using S = grpokit::storage_t<P>;
  using R = grpokit::accum_t<P>;
  std::mt19937_64 rng(seed);
  ref::problem prob = ref::make_problem(rng, lengths_for(T), V, 2.0);
  ref::add_policies(rng, prob, std::vector<ref::ld>(static_cast<std::size_t>(prob.T), -2.0L), 0.2);
  grpokit::loss_config cfg = grpokit::presets::grpo::config();
  cfg.top_k = k;
  cfg.top_p = p;
  cfg.temperature = 0.9;
  cfg.entropy_coef = 0.01;
  const auto host = support::run_fused<P>(prob, cfg);
  const std::vector<S> logits = support::to_storage<S>(prob.logits);
  std::vector<R> hl(static_cast<std::size_t>(prob.T)), he(hl.size()), hlse(hl.size());
  grpokit::host::token_logprobs<P>({{logits.data(), prob.T, prob.V, prob.V}, prob.targets, {}}, cfg, {hl, he, hlse});
  device_problem<P> d(prob);
  buffer<R> logp(prob.T), ent(prob.T), lse(prob.T);
  grpokit::device::token_logprobs<P>(d.input(), cfg, {logp.span(), ent.span(), lse.span()}, d.ws(), d.ws_bytes());
  buffer<S> dlogits(prob.T * prob.V);
  const auto res = grpokit::device::fused_loss<P>(d.input(), d.batch(), cfg, {dlogits.data(), prob.T, prob.V, prob.V},
                                                  d.ws(), d.ws_bytes());
  INFO("seed " << seed << ", V " << V << ", k " << k << ", p " << p);
  const bool bitwise = P::order == grpokit::reduction_order::batch_invariant;
  if (bitwise) {
    CHECK(support::same_bits(logp.host(), hl));
    CHECK(support::same_bits(lse.host(), hlse));
    CHECK(support::same_bits(ent.host(), he));
    CHECK(support::same_bits(dlogits.host(), host.dlogits));
    CHECK(res.loss == host.result.loss);
  } else {
    const auto got = lse.host();
    for (std::int64_t t = 0; t < prob.T; ++t) CHECK(support::close(got[t], hlse[t], 1e-5, 1e-6));
    CHECK(support::close(res.loss, host.result.loss, 1e-5, 1e-7));
  }
  CHECK(res.metrics.masked_tokens_vocab_prune == host.result.metrics.masked_tokens_vocab_prune);
  CHECK(res.metrics.tokens_kept == host.result.metrics.tokens_kept);
  if (k == 1) CHECK(host.result.metrics.masked_tokens_vocab_prune > 0);  // the support bites
}
}  // namespace

TEST_CASE("device top_k / top_p: the host's support, rows and loss (bitwise under batch_invariant)", "[device]") {
  std::uint64_t seed = 70;
  for (const auto& kp : std::vector<std::pair<std::int64_t, double>>{{0, 0.9}, {20, 1.0}, {50, 0.8}, {1, 0.5}}) {
    support_rows_match_host<bi<float, float>>(++seed, sized(20, 7), sized(3001, 301), kp.first, kp.second);
    support_rows_match_host<bi<double, double, grpokit::mask::vocab_prune>>(++seed, sized(20, 5), sized(700, 97),
                                                                            kp.first, kp.second);
    support_rows_match_host<grpokit::policy<grpokit::chunk<512>>>(++seed, sized(20, 4), sized(4097, 1031), kp.first,
                                                                  kp.second);
  }
}

TEST_CASE("device policy_loss with token advantages: bitwise the host under batch_invariant; a NaN one", "[device]") {
  using P = grpokit::policy<grpokit::precision<double, double>, grpokit::reduction::batch_invariant>;
  const policy_inputs in(12, 40);
  const ref::problem& p = in.p;
  support::host_run<P> hr;
  support::load_batch(hr, p);
  device_problem<P> d(p);
  std::mt19937_64 rng(12);
  std::normal_distribution<double> n(0, 1);
  std::vector<double> token_adv(static_cast<std::size_t>(p.T));
  for (auto& a : token_adv) a = n(rng);
  buffer<double> dl(in.logp), de(in.ent), gd(p.T), ge(p.T), dta(token_adv);
  buffer<unsigned char> ws(grpokit::device::workspace_bytes<P>({p.T, 3, p.S}));
  for (const auto obj : {grpokit::objective::ppo_clip, grpokit::objective::gmpo, grpokit::objective::kl_cov}) {
    grpokit::loss_config cfg;
    cfg.obj = obj;
    cfg.entropy_coef = 0.02;
    cfg.kl_cov_ratio = 0.2;
    cfg.dppo = grpokit::dppo_divergence::tv;  // its sign test reads the token's advantage too
    cfg.dppo_low = cfg.dppo_high = 0.05;
    std::vector<double> hd(p.T), he(p.T);
    auto hb = hr.batch(p);
    hb.token_adv = token_adv;
    const auto want = grpokit::host::policy_loss<P>({in.logp, in.ent}, hb, cfg, {hd, he});
    auto db = d.batch();
    db.token_adv = dta.cspan();
    const auto got = grpokit::device::policy_loss<P>({dl.cspan(), de.cspan()}, db, cfg, {gd.span(), ge.span()},
                                                     ws.data(), ws.size());
    INFO("objective " << int(obj));
    CHECK(got.loss == want.loss);
    CHECK(gd.host() == hd);
    CHECK(ge.host() == he);
    CHECK(got.metrics.masked_tokens_dppo == want.metrics.masked_tokens_dppo);
    CHECK(got.metrics.cov_tokens == want.metrics.cov_tokens);
  }
  token_adv[7] = std::nan("");
  buffer<double> bad(token_adv);
  auto db = d.batch();
  db.token_adv = bad.cspan();
  REQUIRE_ERROR(grpokit::device::policy_loss<P>({dl.cspan(), de.cspan()}, db, {}, {gd.span(), ge.span()}, ws.data(),
                                                ws.size()),
                "non-finite input at row/token 7");
}

TEST_CASE("device policy_loss: GMPO, the DPPO masks, the entropy token mean, k3+ and the mismatch metrics",
          "[device]") {
  // the shared per-sequence math under the device schedule: the host's values, and each feature bites
  using P = grpokit::policy<grpokit::precision<double, double>>;
  const policy_inputs in(11, 40);
  const ref::problem& p = in.p;
  const std::vector<double>&logp = in.logp, &ent = in.ent;
  support::host_run<P> hr;
  support::load_batch(hr, p);
  device_problem<P> d(p);
  buffer<double> dl(logp), de(ent), gd(p.T), ge(p.T);
  buffer<unsigned char> ws(grpokit::device::workspace_bytes<P>({p.T, 3, p.S}));
  for (const auto div : {grpokit::dppo_divergence::tv, grpokit::dppo_divergence::binary_kl}) {
    grpokit::loss_config cfg;
    cfg.obj = grpokit::objective::gmpo;
    cfg.eps_low = 0.1;
    cfg.eps_high = 0.15;
    cfg.agg = grpokit::aggregation::seq_mean_token_mean;
    cfg.dppo = div;
    cfg.dppo_low = 0.02;
    cfg.dppo_high = 0.03;
    cfg.entropy_coef = 0.02;
    cfg.entropy_token_mean = true;
    cfg.kl = grpokit::kl_estimator::k3;  // k3+ weighted by the token ratio in one of the two runs
    cfg.kl_coef = 0.1;
    cfg.kl_straight_through = cfg.kl_is_weighted = div == grpokit::dppo_divergence::binary_kl;
    std::vector<double> hd(p.T), he(p.T);
    const auto want = grpokit::host::policy_loss<P>({logp, ent}, hr.batch(p), cfg, {hd, he});
    const auto got = grpokit::device::policy_loss<P>({dl.cspan(), de.cspan()}, d.batch(), cfg,
                                                     {gd.span(), ge.span()}, ws.data(), ws.size());
    INFO("dppo " << int(div));
    CHECK(want.metrics.masked_tokens_dppo > 0);
    CHECK(want.metrics.clip_frac_low + want.metrics.clip_frac_high > 0);
    CHECK(got.metrics.masked_tokens_dppo == want.metrics.masked_tokens_dppo);
    CHECK(support::close(got.loss, want.loss, 1e-12, 1e-14));
    CHECK(got.metrics.clip_frac_low == want.metrics.clip_frac_low);
    CHECK(got.metrics.clip_frac_high == want.metrics.clip_frac_high);
    CHECK(want.metrics.mismatch_chi2_token != 0);
    CHECK(support::close(got.metrics.mismatch_chi2_token, want.metrics.mismatch_chi2_token, 1e-12, 1e-14));
    CHECK(support::close(got.metrics.mismatch_chi2_seq, want.metrics.mismatch_chi2_seq, 1e-12, 1e-14));
    CHECK(support::close(got.metrics.mismatch_ppl_ratio, want.metrics.mismatch_ppl_ratio, 1e-12, 1e-14));
    const auto g1 = gd.host(), g2 = ge.host();
    for (std::int64_t t = 0; t < p.T; ++t) {
      CHECK(support::close(g1[t], hd[t], 1e-12, 1e-15));
      CHECK(support::close(g2[t], he[t], 1e-12, 1e-15));
    }
  }
}

TEST_CASE("device policy_loss: the batch pass (IS weights over their batch mean, VAPO's NLL)", "[device]") {
  // the per-sequence partials of the pass before the loss, combined by the host's tree
  using P = grpokit::policy<grpokit::precision<double, double>, grpokit::reduction::batch_invariant>;
  const policy_inputs in(12, 45);
  const ref::problem& p = in.p;
  support::host_run<P> hr;
  support::load_batch(hr, p);
  device_problem<P> d(p);
  buffer<double> dl(in.logp), de(in.ent), gd(p.T), ge(p.T);
  buffer<unsigned char> ws(grpokit::device::workspace_bytes<P>({p.T, 3, p.S}));
  for (const auto is : {grpokit::is_correction::token_truncate, grpokit::is_correction::sequence_mask}) {
    grpokit::loss_config cfg;
    cfg.is = is;
    cfg.is_max = 3;
    cfg.is_batch_normalize = true;
    cfg.positive_nll_coef = is == grpokit::is_correction::token_truncate ? 0.3 : 0.0;
    cfg.dp_size = 2;
    std::vector<double> hd(p.T), he(p.T);
    const auto want = grpokit::host::policy_loss<P>({in.logp, in.ent}, hr.batch(p), cfg, {hd, he});
    const auto got = grpokit::device::policy_loss<P>({dl.cspan(), de.cspan()}, d.batch(), cfg,
                                                     {gd.span(), ge.span()}, ws.data(), ws.size());
    INFO("is " << int(is));
    CHECK(want.metrics.is_batch_norm_factor != 1);  // each feature bites
    CHECK((cfg.positive_nll_coef == 0 || want.metrics.loss_nll != 0));
    CHECK(support::close(got.loss, want.loss, 1e-12, 1e-14));
    CHECK(support::close(got.metrics.loss_nll, want.metrics.loss_nll, 1e-12, 1e-14));
    CHECK(support::close(got.metrics.is_batch_norm_factor, want.metrics.is_batch_norm_factor, 1e-12, 1e-14));
    CHECK(support::close(got.metrics.is_weight_mean, want.metrics.is_weight_mean, 1e-12, 1e-14));
    const auto g1 = gd.host();
    for (std::int64_t t = 0; t < p.T; ++t) CHECK(support::close(g1[t], hd[t], 1e-12, 1e-15));
  }
}

TEST_CASE("device policy_loss: the top-entropy mask's batch quantile (radix select), ties and zeros", "[device]") {
  // the quantile is an order statistic of the batch and one interpolation: the host's bits
  using P = grpokit::policy<grpokit::precision<float, float>>;
  const policy_inputs in(13, 50);
  const ref::problem& p = in.p;
  support::host_run<P> hr;
  support::load_batch(hr, p);
  device_problem<P> d(p);
  std::vector<float> logp(in.logp.begin(), in.logp.end()), ent(in.ent.begin(), in.ent.end());
  for (std::size_t t = 0; t < ent.size(); t += 5) ent[t] = ent[0];  // ties
  for (std::size_t t = 3; t < ent.size(); t += 11) ent[t] = 0;       // one-hot rows
  ent[7] = -0.0f;
  buffer<float> dl(logp), de(ent), gd(p.T), ge(p.T);
  buffer<unsigned char> ws(grpokit::device::workspace_bytes<P>({p.T, 3, p.S}));
  for (const double rho : {0.0, 0.2, 0.5, 0.85, 1.0}) {
    grpokit::loss_config cfg;
    cfg.top_entropy_quantile = rho;
    cfg.entropy_coef = 0.01;
    std::vector<float> hd(p.T), he(p.T);
    const auto want = grpokit::host::policy_loss<P>({logp, ent}, hr.batch(p), cfg, {hd, he});
    const auto got = grpokit::device::policy_loss<P>({dl.cspan(), de.cspan()}, d.batch(), cfg,
                                                     {gd.span(), ge.span()}, ws.data(), ws.size());
    INFO("rho " << rho);
    CHECK((rho == 1 || want.metrics.masked_tokens_entropy > 0));  // the mask bites
    CHECK(got.metrics.entropy_threshold == want.metrics.entropy_threshold);
    CHECK(got.metrics.masked_tokens_entropy == want.metrics.masked_tokens_entropy);
    CHECK(support::close(got.loss, want.loss, 1e-5, 1e-6));
    const auto g1 = gd.host();
    for (std::int64_t t = 0; t < p.T; ++t) CHECK(support::close(g1[t], hd[t], 1e-5, 1e-7));
  }
  // KL-Cov's top-k: equal log-probs within sequences tie the covariance keys, broken by position
  for (std::size_t t = 1; t < logp.size(); t += 3) logp[t] = logp[t - 1];
  buffer<float> dl2(logp);
  for (const double ratio : {0.0, 0.01, 0.25, 1.0, -0.3}) {  // < 0: Clip-Cov with ratio 0.3
    grpokit::loss_config cfg;
    cfg.obj = ratio < 0 ? grpokit::objective::clip_cov : grpokit::objective::kl_cov;
    cfg.kl_cov_ratio = ratio < 0 ? 0.0 : ratio;
    cfg.clip_cov_ratio = ratio < 0 ? -ratio : 0.0;
    cfg.clip_cov_lb = -0.5;
    cfg.clip_cov_ub = 0.5;
    cfg.clip_cov_seed = 99;
    cfg.ppo_kl_coef = 0.3;
    cfg.top_entropy_quantile = 0.5;  // both selections in one call
    std::vector<float> hd(p.T), he(p.T);
    const auto want = grpokit::host::policy_loss<P>({logp, ent}, hr.batch(p), cfg, {hd, he});
    const auto got = grpokit::device::policy_loss<P>({dl2.cspan(), de.cspan()}, d.batch(), cfg,
                                                     {gd.span(), ge.span()}, ws.data(), ws.size());
    INFO("kl_cov_ratio (< 0: clip_cov_ratio) " << ratio);
    CHECK((ratio == 0 || want.metrics.cov_tokens > 0));
    CHECK(got.metrics.cov_tokens == want.metrics.cov_tokens);
    CHECK(got.metrics.masked_tokens_entropy == want.metrics.masked_tokens_entropy);
    CHECK(support::close(got.loss, want.loss, 1e-5, 1e-6));
    const auto g1 = gd.host();
    for (std::int64_t t = 0; t < p.T; ++t) CHECK(support::close(g1[t], hd[t], 1e-5, 1e-7));
  }
}

TEST_CASE("device policy_loss: M2PO's mean rule before the summaries, ties, with the other selections", "[device]") {
  // M2PO's limit is a second moment of the batch: the host's bits; GSPO's sequence ratios see only
  // the tokens it keeps; the other two selections run in the same call
  using P = grpokit::policy<grpokit::precision<float, float>, grpokit::reduction::batch_invariant>;
  policy_inputs in(14, 55);
  ref::problem& p = in.p;
  for (std::size_t t = 0; t < p.b.logp_rollout.size(); t += 4) p.b.logp_rollout[t] = p.b.logp_old[t] - 0.25L;  // ties
  for (auto* v : {&p.b.logp_old, &p.b.logp_rollout}) // the float inputs' values, as the device reads them
    for (auto& x : *v) x = static_cast<float>(x);
  support::host_run<P> hr;
  support::load_batch(hr, p);
  device_problem<P> d(p);
  const std::vector<float> logp(in.logp.begin(), in.logp.end()), ent(in.ent.begin(), in.ent.end());
  buffer<float> dl(logp), de(ent), gd(p.T), ge(p.T);
  buffer<unsigned char> ws(grpokit::device::workspace_bytes<P>({p.T, 3, p.S}));
  for (const double tau : {0.0, 0.02, 0.06, 0.1, 10.0}) {
    grpokit::loss_config cfg;
    cfg.obj = grpokit::objective::gspo;
    cfg.m2po_threshold = tau;
    cfg.top_entropy_quantile = tau == 0.06 ? 0.5 : 1.0;  // three selections in one call
    cfg.kl_cov_ratio = 0.2;
    if (tau == 0.06) cfg.obj = grpokit::objective::kl_cov;
    std::vector<float> hd(p.T), he(p.T);
    const auto want = grpokit::host::policy_loss<P>({logp, ent}, hr.batch(p), cfg, {hd, he});
    const auto got = grpokit::device::policy_loss<P>({dl.cspan(), de.cspan()}, d.batch(), cfg,
                                                     {gd.span(), ge.span()}, ws.data(), ws.size());
    INFO("m2po_threshold " << tau);
    CHECK((tau == 10 || want.metrics.masked_tokens_m2po > 0));  // the mask bites, except for a large tau
    CHECK((tau != 10 || want.metrics.masked_tokens_m2po == 0));
    CHECK(std::memcmp(&got, &want, sizeof(got)) == 0);  // batch_invariant: the host's bits
    CHECK(support::same_bits(gd.host(), hd));
  }
}

TEST_CASE("device token_logprobs: fast and deterministic within fp32 accuracy", "[device]") {
  using fast = grpokit::policy<grpokit::reduction::fast, grpokit::precision<__nv_bfloat16, float>>;
  using det = grpokit::policy<grpokit::reduction::deterministic, grpokit::chunk<512>>;
  forward_matches_host<fast>(sized(33, 5), 9000, false, false);
  forward_matches_host<det>(sized(257, 9), 3000, true, false);
  forward_matches_host<det>(3, sized(70000, 20000), false, false);
}

TEST_CASE("device logits_backward: bitwise the host dlogits under batch_invariant, also in place", "[device]") {
  using P = bi<__nv_bfloat16, float, grpokit::chunk<256>>;
  using S = grpokit::storage_t<P>;
  const ref::problem p = make(17, lengths_for(sized(37, 9)), 5003, true);
  grpokit::loss_config cfg;
  auto h = support::host_run<P>{};
  h.logits = support::to_storage<S>(p.logits);
  h.temperature = support::cast<float>(p.temperature);
  std::vector<float> logp(p.T), ent(p.T), lse(p.T), g(p.T), ge(p.T);
  grpokit::host::token_logprobs<P>(h.input(p), cfg, {logp, ent, lse});
  std::mt19937 rng(3);
  std::normal_distribution<float> n(0, 0.1f);
  for (std::int64_t t = 0; t < p.T; ++t) {
    g[t] = t % 5 == 0 ? 0.f : n(rng);
    ge[t] = t % 3 == 0 ? 0.f : n(rng);
  }
  std::vector<S> want(h.logits.size());
  grpokit::host::logits_backward<P>(h.input(p), {lse, ent, g, ge}, cfg, {want.data(), p.T, p.V, p.V});
  device_problem<P> d(p);
  buffer<float> dlse(lse), dent(ent), dg(g), dge(ge);
  buffer<S> out(want.size());
  const grpokit::backward_inputs<float> gi{dlse.cspan(), dent.cspan(), dg.cspan(), dge.cspan()};
  grpokit::device::logits_backward<P>(d.input(), gi, cfg, {out.data(), p.T, p.V, p.V}, d.ws(), d.ws_bytes());
  CHECK(support::same_bits(out.host(), want));
  grpokit::device::logits_backward<P>(d.input(), gi, cfg, {d.logits.data(), p.T, p.V, p.V}, d.ws(), d.ws_bytes(), 0,
                                      grpokit::backward_mode::in_place);
  CHECK(support::same_bits(d.logits.host(), want));
  REQUIRE_THROWS_AS((grpokit::device::logits_backward<P>(d.input(), gi, cfg, {d.logits.data() + 1, p.T, p.V, p.V},
                                                          d.ws(), d.ws_bytes())),
                    grpokit::error);
}

namespace {

struct skip_every_seventh {
  using policy_axis = grpokit::axis::mask;
  template <class Real>
  GRPOKIT_HD static bool keep(const grpokit::token_view<Real>& v, const grpokit::loss_config&) {
    return v.token % 7 != 2;
  }
};

template <class P>
void fused_matches_host(std::uint64_t seed, grpokit::loss_config cfg, std::int64_t T, std::int64_t V) {
  using S = grpokit::storage_t<P>;
  using R = grpokit::accum_t<P>;
  std::mt19937_64 rng(seed);
  ref::problem p = ref::make_problem(rng, lengths_for(T), V, 2.0);
  {
    std::vector<ref::ld> logp, ent;
    support::ref_rows(p, std::vector<ref::ld>(p.logits.begin(), p.logits.end()), cfg, P::vocab_prune, logp, ent);
    ref::add_policies(rng, p, logp, 0.2);
  }
  const auto host = support::run_fused<P>(p, cfg);
  std::vector<R> host_sum_p2(static_cast<std::size_t>(p.T));
  {
    std::vector<S> scratch(host.dlogits.size());
    grpokit::host::fused_loss<P>(host.input(p), host.batch(p), cfg, {scratch.data(), p.T, p.V, p.V},
                                 {{}, {}, host_sum_p2});
  }
  device_problem<P> d(p);
  buffer<S> dlogits(host.dlogits.size());
  buffer<R> logp(p.T), ent(p.T), sum_p2(p.T);
  const auto res = grpokit::device::fused_loss<P>(d.input(), d.batch(), cfg, {dlogits.data(), p.T, p.V, p.V}, d.ws(),
                                                  d.ws_bytes(), 0, {logp.span(), ent.span(), sum_p2.span()});
  INFO("seed " << seed << " obj " << int(cfg.obj) << " agg " << int(cfg.agg));
  CHECK(support::close(res.loss, host.result.loss, 1e-5, 1e-7));
  CHECK(res.metrics.tokens == host.result.metrics.tokens);
  CHECK(res.metrics.tokens_kept == host.result.metrics.tokens_kept);
  CHECK(res.metrics.masked_seqs_trust_region == host.result.metrics.masked_seqs_trust_region);
  CHECK(res.metrics.masked_tokens_custom == host.result.metrics.masked_tokens_custom);
  CHECK(support::close(res.metrics.clip_frac_high, host.result.metrics.clip_frac_high, 1e-9, 1e-3));
  CHECK(support::close(res.metrics.entropy_mean, host.result.metrics.entropy_mean, 1e-5, 1e-6));
  const auto got = support::to_double(dlogits.host());
  const auto want = support::to_double(host.dlogits);
  double scale = 0;
  for (double g : want) scale = std::max(scale, std::fabs(g));
  for (std::size_t i = 0; i < want.size(); ++i) CHECK(std::fabs(got[i] - want[i]) <= 1e-5 * scale + 1e-2 * std::fabs(want[i]));
  const auto lp = logp.host();
  for (std::int64_t t = 0; t < p.T; ++t)
    if (std::isfinite(host.logp[t])) CHECK(support::close(lp[t], host.logp[t], 1e-5, 1e-5));
  const auto q = sum_p2.host();  // the same lanes and tree: bitwise where the exp is (batch_invariant)
  if (P::order == grpokit::reduction_order::batch_invariant) CHECK(support::same_bits(q, host_sum_p2));
  for (std::int64_t t = 0; t < p.T; ++t) CHECK(support::close(q[t], host_sum_p2[t], 1e-5, 1e-7));
}

// token_logprobs' sum_p2 (the old policy's forward): the bits of fused_loss's on the device, the
// host's under batch_invariant.
template <class P>
void token_logprobs_sum_p2_matches(std::uint64_t seed, std::int64_t T, std::int64_t V) {
  using S = grpokit::storage_t<P>;
  using R = grpokit::accum_t<P>;
  std::mt19937_64 rng(seed);
  ref::problem p = ref::make_problem(rng, lengths_for(T), V, 2.0);
  ref::add_policies(rng, p, std::vector<ref::ld>(static_cast<std::size_t>(p.T), -2.0L), 0.2);
  grpokit::loss_config cfg = grpokit::presets::grpo::config();
  cfg.prune_rho = 0.05;
  cfg.temperature = 0.8;
  device_problem<P> d(p);
  buffer<S> dlogits(p.T * p.V);
  buffer<R> fused(p.T), logp(p.T), lse(p.T), sum_p2(p.T);
  grpokit::device::fused_loss<P>(d.input(), d.batch(), cfg, {dlogits.data(), p.T, p.V, p.V}, d.ws(), d.ws_bytes(), 0,
                                 {{}, {}, fused.span()});
  grpokit::device::token_logprobs<P>(d.input(), cfg, {logp.span(), {}, lse.span(), sum_p2.span()}, d.ws(),
                                     d.ws_bytes());
  const auto got = sum_p2.host();
  INFO("seed " << seed << ", V " << V);
  CHECK(support::same_bits(got, fused.host()));
  const std::vector<S> logits = support::to_storage<S>(p.logits);
  std::vector<R> hl(static_cast<std::size_t>(p.T)), hlse(hl.size()), hsp(hl.size());
  grpokit::host::token_logprobs<P>({{logits.data(), p.T, p.V, p.V}, p.targets, {}}, cfg, {hl, {}, hlse, hsp});
  if (P::order == grpokit::reduction_order::batch_invariant) CHECK(support::same_bits(got, hsp));
  for (std::int64_t t = 0; t < p.T; ++t) CHECK(support::close(got[t], hsp[t], 1e-5, 1e-7));
}
}  // namespace

TEST_CASE("device token_logprobs sum_p2: fused_loss's bits, the host's under batch_invariant", "[device]") {
  token_logprobs_sum_p2_matches<grpokit::policy<grpokit::chunk<512>>>(31, sized(20, 7), sized(3001, 1201));
  token_logprobs_sum_p2_matches<bi<__nv_bfloat16, float>>(32, sized(20, 5), 700);
  token_logprobs_sum_p2_matches<bi<float, float, grpokit::chunk<64>, grpokit::mask::vocab_prune>>(33, sized(20, 6), 4097);
}

namespace {

// Every aggregation and three policies (deterministic fp32, batch-invariant bf16 with a user mask,
// vocabulary pruning) for one objective; a test case per objective.
void fused_matches_host_for(grpokit::objective obj, std::uint64_t seed) {
  for (auto agg : {grpokit::aggregation::token_mean, grpokit::aggregation::seq_mean_token_mean,
                   grpokit::aggregation::seq_mean_token_sum_norm}) {
    grpokit::loss_config c = grpokit::presets::grpo::config();
    c.obj = obj;
    c.agg = agg;
    c.norm_constant = 64;
    c.entropy_coef = 0.01;
    c.is = grpokit::is_correction::token_truncate;
    c.trm_max_threshold = 0.5;
    c.prune_rho = 0.01;
    fused_matches_host<grpokit::policy<grpokit::chunk<512>>>(++seed, c, sized(50, 13), sized(3001, 1201));
    fused_matches_host<bi<__nv_bfloat16, float, grpokit::mask::all_of<grpokit::mask::trust_region, skip_every_seventh>>>(
        ++seed, c, sized(70, 15), 5000);
    fused_matches_host<bi<float, float, grpokit::chunk<64>, grpokit::mask::vocab_prune>>(++seed, c, sized(20, 11), 4097);
  }
}

}  // namespace

TEST_CASE("device fused_loss matches the host: ppo_clip, every aggregation and mask", "[device]") {
  fused_matches_host_for(grpokit::objective::ppo_clip, 100);
}
TEST_CASE("device fused_loss matches the host: cispo, every aggregation and mask", "[device]") {
  fused_matches_host_for(grpokit::objective::cispo, 200);
}
TEST_CASE("device fused_loss matches the host: gspo, every aggregation and mask", "[device]") {
  fused_matches_host_for(grpokit::objective::gspo, 300);
}
TEST_CASE("device fused_loss matches the host: sapo, every aggregation and mask", "[device]") {
  fused_matches_host_for(grpokit::objective::sapo, 400);
}
TEST_CASE("device fused_loss matches the host: reinforce, every aggregation and mask", "[device]") {
  fused_matches_host_for(grpokit::objective::reinforce, 500);
}

// device compute_advantages against the host on the same inputs: advantages within 1e-12 (bitwise
// when asked), masks and counts equal, statistics within 1e-12.
template <class P>
void advantages_match_host(const std::vector<double>& r, const std::vector<std::int64_t>& offsets,
                           const std::vector<double>& lr, const std::vector<double>& gb,
                           const grpokit::advantage_config& cfg, bool bitwise) {
  const auto S = static_cast<std::int64_t>(r.size());
  std::vector<double> ha(S), tokens(S);
  for (std::int64_t i = 0; i < S; ++i) tokens[i] = static_cast<double>((i * 7919) % 23);  // lengths, some 0
  std::vector<std::uint8_t> hk(S);
  const auto hs = grpokit::host::compute_advantages<P>({r, offsets, lr, {}, gb, tokens}, cfg, {ha, hk});
  buffer<double> dr(r), dlr(lr), dgb(gb), dtok(tokens), da(S);
  buffer<std::int64_t> doff(offsets);
  buffer<std::uint8_t> dk(S);
  buffer<unsigned char> ws(grpokit::device::workspace_bytes<P>({0, 0, S}));
  const auto ds = grpokit::device::compute_advantages<P>(
      {dr.cspan(), doff.cspan(), dlr.cspan(), {}, dgb.cspan(), dtok.cspan()}, cfg, {da.span(), dk.span()}, ws.data(),
      ws.size());
  const auto got = da.host();
  if (bitwise) CHECK(support::same_bits(got, ha));
  for (std::int64_t i = 0; i < S; ++i) CHECK(support::close(got[i], ha[i], 1e-12, 1e-12));
  CHECK(dk.host() == hk);
  CHECK(ds.zero_variance_groups == hs.zero_variance_groups);
  CHECK(ds.singleton_groups == hs.singleton_groups);
  CHECK(ds.excluded_seqs == hs.excluded_seqs);
  CHECK(support::close(ds.reward_mean, hs.reward_mean, 1e-12, 1e-12));
  CHECK(support::close(ds.reward_std, hs.reward_std, 1e-12, 1e-12));
  CHECK(support::close(ds.adv_mean, hs.adv_mean, 1e-12, 1e-12));
  CHECK(support::close(ds.adv_std, hs.adv_std, 1e-12, 1e-12));
  CHECK(support::close(ds.ess, hs.ess, 1e-12, 1e-12));
}

TEST_CASE("device compute_advantages_multi (GDPO) matches the host: several rewards, weights, masks", "[device]") {
  std::mt19937_64 rng(17);
  std::uniform_int_distribution<int> coin(0, 3);
  std::vector<std::int64_t> offsets{0};
  for (std::int64_t s : {1, 3, 8, 5, 40, 2, 7}) offsets.push_back(offsets.back() + s);
  const std::int64_t S = offsets.back(), K = 3;
  std::vector<double> r(static_cast<std::size_t>(S * K)), tokens(S);
  for (auto& v : r) v = coin(rng) * 0.5;
  for (std::int64_t i = 0; i < S; ++i) tokens[i] = static_cast<double>((i * 7919) % 23);
  const std::vector<double> w{1.0, -0.5, 2.0};
  auto check = [&](auto policy_tag, grpokit::advantage_config cfg, bool with_tokens) {
    using P = decltype(policy_tag);
    const std::vector<double> tok = with_tokens ? tokens : std::vector<double>{};
    std::vector<double> ha(S);
    std::vector<std::uint8_t> hk(S);
    const auto hs = grpokit::host::compute_advantages_multi<P>({{r.data(), S, K, K}, offsets, w, tok}, cfg, {ha, hk});
    buffer<double> dr(r), dtok(tok), da(S);
    buffer<std::int64_t> doff(offsets);
    buffer<std::uint8_t> dk(S);
    std::size_t bytes = 0;
    const grpokit::multi_reward_inputs<double> din{{dr.data(), S, K, K}, doff.cspan(), w, dtok.cspan()};
    grpokit::device::compute_advantages_multi_async<P>(din, cfg, {da.span(), dk.span()}, nullptr, bytes);
    buffer<unsigned char> ws(bytes);
    const auto ds = grpokit::device::compute_advantages_multi<P>(din, cfg, {da.span(), dk.span()}, ws.data(), bytes);
    const auto got = da.host();
    for (std::int64_t i = 0; i < S; ++i) CHECK(support::close(got[i], ha[i], 1e-12, 1e-12));
    CHECK(dk.host() == hk);
    CHECK(ds.excluded_seqs == hs.excluded_seqs);
    CHECK(support::close(ds.adv_mean, hs.adv_mean, 1e-12, 1e-12));
    CHECK(support::close(ds.adv_std, hs.adv_std, 1e-12, 1e-12));
    CHECK(support::close(ds.reward_std, hs.reward_std, 1e-12, 1e-12));
  };
  using D = grpokit::precision<double, double>;
  grpokit::advantage_config cfg;
  cfg.mask_zero_variance = true;  // some rollouts dropped by one reward only
  check(grpokit::policy<D>{}, cfg, false);
  cfg.clip_low = -0.8;
  cfg.scale = grpokit::adv_scale::none;
  check(grpokit::policy<D, grpokit::baseline::leave_one_out>{}, cfg, true);
  check(grpokit::policy<D, grpokit::baseline::median>{}, cfg, false);  // the pivots differ per reward
  // a bad offset in the group offsets is raised, as compute_advantages raises it
  std::vector<std::int64_t> bad = offsets;
  bad[2] = bad[3] + 1;
  buffer<double> dr(r), da(S);
  buffer<std::int64_t> doff(bad);
  buffer<std::uint8_t> dk(S);
  std::size_t bytes = 0;
  const grpokit::multi_reward_inputs<double> din{{dr.data(), S, K, K}, doff.cspan(), {}};
  grpokit::device::compute_advantages_multi_async<grpokit::policy<D>>(din, {}, {da.span(), dk.span()}, nullptr, bytes);
  buffer<unsigned char> ws(bytes);
  REQUIRE_THROWS_AS((grpokit::device::compute_advantages_multi<grpokit::policy<D>>(din, {}, {da.span(), dk.span()},
                                                                                  ws.data(), bytes)),
                    grpokit::error);
}

TEST_CASE("device compute_advantages matches the host for every baseline", "[device]") {
  std::mt19937_64 rng(5);
  std::uniform_int_distribution<int> coin(0, 3);
  std::normal_distribution<double> n(0, 2);
  std::vector<std::int64_t> offsets{0};
  for (std::int64_t s : {1, 3, 8, 5, 64, 2, 7}) offsets.push_back(offsets.back() + s);
  const std::int64_t S = offsets.back();
  std::vector<double> r(S), lr(S), gb(offsets.size() - 1);
  for (auto& v : r) v = coin(rng) * 0.5;
  for (auto& v : lr) v = n(rng);
  for (auto& v : gb) v = coin(rng) * 0.25;
  auto check = [&](auto policy_tag, grpokit::advantage_config cfg) {
    advantages_match_host<decltype(policy_tag)>(r, offsets, lr, gb, cfg, false);
  };
  using D = grpokit::precision<double, double>;
  for (auto scale : {grpokit::adv_scale::group, grpokit::adv_scale::batch, grpokit::adv_scale::none,
                     grpokit::adv_scale::gpg, grpokit::adv_scale::whiten}) {
    grpokit::advantage_config cfg;
    cfg.scale = scale;
    cfg.mask_zero_variance = scale == grpokit::adv_scale::batch;
    cfg.equal_group_weight = scale != grpokit::adv_scale::none;
    if (scale != grpokit::adv_scale::group) cfg.clip_low = -0.6;
    if (scale == grpokit::adv_scale::none || scale == grpokit::adv_scale::gpg) cfg.clip_high = 0.4;
    check(grpokit::policy<D, grpokit::baseline::mean>{}, cfg);
    check(grpokit::policy<D, grpokit::baseline::median>{}, cfg);
    check(grpokit::policy<D, grpokit::baseline::leave_one_out>{}, cfg);
    check(grpokit::policy<D, grpokit::baseline::ess_scaled>{}, cfg);
    check(grpokit::policy<D, grpokit::baseline::external>{}, cfg);
    check(grpokit::policy<D, grpokit::baseline::pass_at_k>{}, cfg);
    check(grpokit::policy<D, grpokit::baseline::opo>{}, cfg);
  }
}

TEST_CASE("device compute_advantages: a block per large group (n = 512, 4096; tiny and huge mixed)", "[device][slow]") {
  // groups of more than tuning::small_group_max rollouts run on a block (block_ops: radix-selected
  // medians, fixed-order block sums), the others on a thread; both against the host
  std::mt19937_64 rng(17);
  std::normal_distribution<double> n(0, 2);
  std::uniform_int_distribution<int> coin(0, 3);
  const std::int64_t big = device_support::sized(4096, 300), mid = device_support::sized(512, 130);
  for (const auto& sizes : std::vector<std::vector<std::int64_t>>{
           {big}, {1, 2, big, 3, mid, 1, 65, 64, 7}, {grpokit::device::tuning::small_group_max + 1, 1}}) {
    for (const int values : {0, 1, 2}) {  // binary with ties; continuous; signed zeros and a few levels
      std::vector<std::int64_t> offsets{0};
      for (auto size : sizes) offsets.push_back(offsets.back() + size);
      const std::int64_t S = offsets.back();
      std::vector<double> r(S), lr(S), gb(sizes.size());
      for (auto& v : r) {
        const int c = coin(rng);
        v = values == 0 ? c % 2 : values == 1 ? n(rng) : c == 0 ? -0.0 : c == 1 ? 0.0 : c == 2 ? 0.25 : -0.25;
      }
      for (auto& v : lr) v = n(rng) * 0.1;
      for (auto& v : gb) v = n(rng);
      using D = grpokit::precision<double, double>;
      auto check = [&](auto policy_tag, grpokit::advantage_config cfg, bool bitwise) {
        advantages_match_host<decltype(policy_tag)>(r, offsets, lr, gb, cfg, bitwise);
      };
      for (auto scale : {grpokit::adv_scale::group, grpokit::adv_scale::batch, grpokit::adv_scale::whiten}) {
        grpokit::advantage_config cfg;
        cfg.scale = scale;
        cfg.mask_zero_variance = true;
        if (scale == grpokit::adv_scale::whiten) {  // the batch block's whitening over a block's groups
          check(grpokit::policy<D, grpokit::baseline::opo>{}, cfg, false);
          continue;
        }
        // the median and the MAD are order statistics: with the group's own scale, bitwise the host
        check(grpokit::policy<D, grpokit::baseline::median>{}, cfg, scale == grpokit::adv_scale::group);
        check(grpokit::policy<D, grpokit::baseline::mean>{}, cfg, false);
        if (values == 2) continue;  // signed zeros and a few levels: for the order statistics above
        check(grpokit::policy<D, grpokit::baseline::leave_one_out>{}, cfg, false);
        check(grpokit::policy<D, grpokit::baseline::ess_scaled>{}, cfg, false);
        check(grpokit::policy<D, grpokit::baseline::external>{}, cfg, false);
        check(grpokit::policy<D, grpokit::baseline::opo>{}, cfg, false);
      }
    }
  }
}

TEST_CASE("device grpo_lambda_rewards: bitwise the host pass; ties, fractions, bad input", "[device]") {
  std::mt19937_64 rng(91);
  for (int rep = 0; rep < 12; ++rep) {
    const int G = 1 + (rep * 37) % (device_support::sized(300, 60));
    const auto [groups, seq_off, correct] = support::random_grpo_lambda_batch(rng, G, rep % 3 == 0 ? 40 : 9, 50);
    grpokit::grpo_lambda_config cfg;
    cfg.top_fraction = (rep % 6) / 5.0;
    cfg.length_weight = 0.7;
    std::vector<double> want(correct.size());
    const auto hs = grpokit::host::grpo_lambda_rewards<double>(correct, seq_off, groups, cfg, want);
    buffer<std::uint8_t> dc(correct);
    buffer<std::int64_t> doff(seq_off), dg(groups);
    buffer<double> dr(correct.size());
    std::size_t bytes = 0;
    grpokit::device::grpo_lambda_rewards_async<double>(dc.cspan(), doff.cspan(), dg.cspan(), cfg, dr.span(), nullptr,
                                                       bytes);
    CHECK(bytes == grpokit::device::grpo_lambda_workspace_bytes(G));
    buffer<unsigned char> ws(bytes);
    const auto ds =
        grpokit::device::grpo_lambda_rewards<double>(dc.cspan(), doff.cspan(), dg.cspan(), cfg, dr.span(), ws.data(), bytes);
    INFO("rep " << rep << ", G " << G);
    CHECK(dr.host() == want);
    CHECK(ds.groups == hs.groups);
    CHECK(ds.penalised_groups == hs.penalised_groups);
    CHECK(ds.lowest_penalised_ratio == hs.lowest_penalised_ratio);
  }
  // a correct value of 2 and an empty group come back through the status
  const std::vector<std::uint8_t> correct{1, 2, 0};
  const std::vector<std::int64_t> seq_off{0, 4, 9, 12}, groups{0, 2, 3}, empty_group{0, 2, 2, 3};
  buffer<std::uint8_t> dc(correct);
  buffer<std::int64_t> doff(seq_off), dg(groups), de(empty_group);
  buffer<double> dr(3);
  buffer<unsigned char> ws(grpokit::device::grpo_lambda_workspace_bytes(3));
  REQUIRE_ERROR(grpokit::device::grpo_lambda_rewards<double>(dc.cspan(), doff.cspan(), dg.cspan(), {}, dr.span(),
                                                             ws.data(), ws.size()),
                "input out of its domain at row/sequence/group 1");
  const std::vector<std::uint8_t> fine{1, 0, 0};
  buffer<std::uint8_t> df(fine);
  REQUIRE_ERROR(grpokit::device::grpo_lambda_rewards<double>(df.cspan(), doff.cspan(), de.cspan(), {}, dr.span(),
                                                             ws.data(), ws.size()),
                "offsets");
}

namespace {
// The optimal token baseline on the device against the host's, in Real (the inputs rounded to it
// first, both sides alike).
template <class Real>
void token_baseline_matches_host(const support::otb_batch& b, bool with_mask, const grpokit::token_baseline_config& cfg) {
  auto in_real = [](const std::vector<double>& v) { return std::vector<Real>(v.begin(), v.end()); };
  const std::vector<Real> r = in_real(b.rewards), lp = in_real(b.logp_old), p2 = in_real(b.sum_p2),
                          is = in_real(b.is_weights);
  const std::vector<std::uint8_t> mask = with_mask ? b.mask : std::vector<std::uint8_t>{};
  const std::size_t T = r.size();
  std::vector<Real> want(T), want_ret(T);
  const auto hs = grpokit::host::optimal_token_baseline<Real>({r, b.seq_off, b.groups, lp, p2, is, mask}, cfg,
                                                              {want, want_ret});
  buffer<Real> dr(r), dlp(lp), dp2(p2), dis(is), adv(T), ret(T);
  buffer<std::int64_t> doff(b.seq_off), dg(b.groups);
  buffer<std::uint8_t> dm(mask);
  const grpokit::token_baseline_inputs<Real> in{dr.cspan(), doff.cspan(), dg.cspan(), dlp.cspan(),
                                                dp2.cspan(), dis.cspan(), dm.cspan()};
  std::size_t bytes = 0;
  grpokit::device::optimal_token_baseline_async<Real>(in, cfg, {adv.span(), ret.span()}, nullptr, bytes);
  CHECK(bytes == grpokit::device::token_baseline_workspace_bytes(T, b.seq_off.size() - 1, b.groups.size() - 1));
  buffer<unsigned char> ws(bytes);
  const auto ds = grpokit::device::optimal_token_baseline<Real>(in, cfg, {adv.span(), ret.span()}, ws.data(), bytes);
  CHECK(adv.host() == want);
  CHECK(ret.host() == want_ret);
  CHECK(ds.groups == hs.groups);
  CHECK(ds.singleton_groups == hs.singleton_groups);
  CHECK(ds.zero_tail_groups == hs.zero_tail_groups);
  CHECK(ds.response_tokens == hs.response_tokens);
}
}  // namespace

TEST_CASE("device optimal_token_baseline: bitwise the host; both step modes, zero tail, IS weights, bad input",
          "[device]") {
  std::mt19937_64 rng(2603);
  for (int rep = 0; rep < 16; ++rep) {
    const int G = 1 + (rep * 37) % device_support::sized(200, 40);
    const auto b = support::random_otb_batch(rng, G, 1 + rep % 7, rep % 2 ? 40 : 9, rep % 3 == 1);
    grpokit::token_baseline_config cfg;
    cfg.compact = rep % 2 == 1;
    cfg.zero_tail = rep % 4 < 3;
    INFO("rep " << rep << ", G " << G << ", T " << b.rewards.size());
    if (rep % 5 == 3) token_baseline_matches_host<float>(b, true, cfg);
    else token_baseline_matches_host<double>(b, rep % 5 != 4, cfg);
  }
  // bad offsets, an empty group and a non-finite response input come back through the status
  const std::vector<std::int64_t> seq_off{0, 2, 5, 8}, groups{0, 2, 3}, empty_group{0, 2, 2, 3}, falling{0, 6, 5, 8};
  std::vector<double> rewards{0, 1, 0, 0, 2, 1, 0, 3};
  const std::vector<double> logp(8, -0.7), p2(8, 0.5);
  buffer<std::int64_t> doff(seq_off), dg(groups), de(empty_group), df(falling);
  buffer<double> dlp(logp), dp2(p2), adv(8);
  buffer<unsigned char> ws(grpokit::device::token_baseline_workspace_bytes(8, 3, 3));
  auto run = [&](const buffer<double>& r, const buffer<std::int64_t>& off, const buffer<std::int64_t>& g) {
    grpokit::device::optimal_token_baseline<double>({r.cspan(), off.cspan(), g.cspan(), dlp.cspan(), dp2.cspan()}, {},
                                                    {adv.span(), {}}, ws.data(), ws.size());
  };
  buffer<double> dr(rewards);
  REQUIRE_NOTHROW(run(dr, doff, dg));
  REQUIRE_ERROR(run(dr, doff, de), "offsets");
  REQUIRE_ERROR(run(dr, df, dg), "offsets");
  rewards[6] = std::nan("");
  buffer<double> dnan(rewards);
  REQUIRE_ERROR(run(dnan, doff, dg), "non-finite input at row/token 6");
}

TEST_CASE("device data errors come back through the status, never out of bounds", "[device][errors]") {
  using P = grpokit::policy<grpokit::chunk<64>>;
  const ref::problem good = make(9, {4, 3}, 100, false);
  grpokit::loss_config cfg;
  {
    ref::problem p = good;
    p.targets[5] = 100;
    device_problem<P> d(p);
    buffer<float> dl(p.logits.size());
    REQUIRE_ERROR((grpokit::device::fused_loss<P>(d.input(), d.batch(), cfg, {dl.data(), p.T, p.V, p.V}, d.ws(),
                                                        d.ws_bytes())),
                  "targets[5] is out of range");
  }
  {
    ref::problem p = good;
    p.logits[3 * p.V + 7] = std::numeric_limits<double>::quiet_NaN();
    device_problem<P> d(p);
    buffer<float> dl(p.logits.size());
    REQUIRE_ERROR((grpokit::device::fused_loss<P>(d.input(), d.batch(), cfg, {dl.data(), p.T, p.V, p.V}, d.ws(),
                                                        d.ws_bytes())),
                  "non-finite input at row/token 3");
  }
  {
    ref::problem p = good;
    p.b.seq_offsets = {0, 5, 3, 7};
    p.b.adv = {1, -1, 0.5};
    p.b.seq_mask = {1, 1, 1};
    p.b.positive = {1, 0, 1};
    p.S = 3;
    device_problem<P> d(p);
    buffer<float> dl(p.logits.size());
    REQUIRE_ERROR((grpokit::device::fused_loss<P>(d.input(), d.batch(), cfg, {dl.data(), p.T, p.V, p.V}, d.ws(),
                                                        d.ws_bytes())),
                  "offsets are not valid");
  }
  {
    device_problem<P> d(good);
    buffer<float> dl(good.logits.size());
    REQUIRE_ERROR((grpokit::device::fused_loss<P>(d.input(), d.batch(), cfg, {dl.data(), good.T, good.V, good.V},
                                                        d.ws(), 64)),
                  "workspace too small");
  }
}

TEST_CASE("device deterministic: identical bits run to run", "[device]") {
  using P = grpokit::policy<grpokit::reduction::deterministic, grpokit::precision<__nv_bfloat16, float>>;
  const ref::problem p = make(21, lengths_for(sized(300, 9)), 20000, false);
  device_problem<P> d(p);
  grpokit::loss_config cfg = grpokit::presets::dapo::config();
  buffer<__nv_bfloat16> a(p.logits.size()), b(p.logits.size());
  const auto ra = grpokit::device::fused_loss<P>(d.input(), d.batch(), cfg, {a.data(), p.T, p.V, p.V}, d.ws(), d.ws_bytes());
  // the second run on a stream of its own: the entry point orders its work on the stream it is given
  cudaStream_t stream;
  GRPOKIT_CUDA_CHECK(cudaStreamCreate(&stream));
  const auto rb = grpokit::device::fused_loss<P>(d.input(), d.batch(), cfg, {b.data(), p.T, p.V, p.V}, d.ws(), d.ws_bytes(),
                                                 stream);
  GRPOKIT_CUDA_CHECK(cudaStreamDestroy(stream));
  CHECK(support::same_bits(a.host(), b.host()));
  CHECK(std::memcmp(&ra.loss, &rb.loss, sizeof(double)) == 0);
  CHECK(std::memcmp(&ra.metrics.entropy_mean, &rb.metrics.entropy_mean, sizeof(double)) == 0);
}

namespace {

// device fused_linear_loss against host::fused_linear_loss; `call` runs the device entry point
// (with cuBLAS, or with reference_gemm through detail::fused_linear_loss_with).
// `sampler`: under top_k / top_p (in double only: the GEMMs' rounding must not move a column across
// the support's threshold).
template <class P, class Call>
void linear_matches_host(const Call& call, std::int64_t T, std::int64_t V, std::int64_t D, std::int64_t chunk,
                         bool bias, bool dweight_in_storage, bool sampler) {
  using S = grpokit::storage_t<P>;
  using R = grpokit::accum_t<P>;
  grpokit::loss_config cfg = grpokit::presets::grpo::config();
  cfg.entropy_coef = 0.01;
  if (sampler) cfg.top_k = 40, cfg.top_p = 0.9;
  std::mt19937_64 rng(static_cast<std::uint64_t>(T * 7 + V));
  ref::problem p = ref::make_problem(rng, lengths_for(T), V, 1.0);
  std::normal_distribution<double> n(0, 1.0 / std::sqrt(static_cast<double>(D))), h(0, 1.5);
  std::vector<double> hid(static_cast<std::size_t>(T * D)), w(static_cast<std::size_t>(V * D)), b;
  for (auto& x : hid) x = h(rng);
  for (auto& x : w) x = n(rng);
  if (bias) b.assign(static_cast<std::size_t>(V), 0.1);
  std::vector<ref::ld> lp(static_cast<std::size_t>(T), ref::ld(-2));
  ref::add_policies(rng, p, lp, 0.3);
  const auto hs = support::to_storage<S>(hid), ws_ = support::to_storage<S>(w), bs = support::to_storage<S>(b);
  support::host_run<P> hr;
  support::load_batch(hr, p);
  std::vector<S> dh(hs.size());
  std::vector<R> dw(ws_.size(), R(0)), db(b.size(), R(0));
  std::vector<S> dws_host(dweight_in_storage ? ws_.size() : 0, grpokit::math::store<S>(0.0));
  grpokit::linear_grads<S, R> hg;
  hg.dhidden = {dh.data(), T, D, D};
  if (dweight_in_storage)
    hg.dweight = {dws_host.data(), V, D, D};
  else
    hg.dweight_acc = {dw.data(), V, D, D};
  hg.dbias = db;
  std::vector<R> hlogp(static_cast<std::size_t>(T)), hent(static_cast<std::size_t>(T)), hp2(static_cast<std::size_t>(T));
  // lm_head_norms over groups of two sequences (the last may have one)
  std::vector<std::int64_t> groups{0};
  while (groups.back() < p.S) groups.push_back(std::min<std::int64_t>(groups.back() + 2, p.S));
  const std::size_t B = groups.size() - 1;
  std::vector<double> h_rollout(static_cast<std::size_t>(p.S)), h_group(B);
  double h_batch = 0;
  const auto want = grpokit::host::fused_linear_loss<P>({{hs.data(), T, D, D}, {ws_.data(), V, D, D}, bs, p.targets, {}},
                                                        hr.batch(p), cfg, chunk, hg, {hlogp, hent, hp2},
                                                        {groups, h_rollout, h_group, &h_batch});
  device_problem<P> d(p);
  buffer<S> dhs(hs), dws(ws_), dbs(bs), ddh(hs.size());
  buffer<S> ddws(std::vector<S>(dws_host.size(), grpokit::math::store<S>(0.0)));  // dweight starts at 0, as on the host
  buffer<R> ddw(dw.size()), ddb(db.size()), dlogp(T), dent(T), dp2(T);
  GRPOKIT_CUDA_CHECK(cudaMemset(ddw.data(), 0, dw.size() * sizeof(R)));
  GRPOKIT_CUDA_CHECK(cudaMemset(ddb.data(), 0, db.size() * sizeof(R)));
  buffer<unsigned char> ws(grpokit::device::linear_workspace_bytes<P>({T, V, p.S}, chunk, D));
  buffer<double> d_rollout(static_cast<std::size_t>(p.S)), d_group(B), d_batch(1);
  const grpokit::lm_head_norms norms{groups, d_rollout.span(), d_group.span(), d_batch.data(), p.b.seq_offsets};
  grpokit::linear_grads<S, R> dg;
  dg.dhidden = {ddh.data(), T, D, D};
  if (dweight_in_storage)
    dg.dweight = {ddws.data(), V, D, D};
  else
    dg.dweight_acc = {ddw.data(), V, D, D};
  dg.dbias = ddb.span();
  const auto got = call(grpokit::linear_input<S, R>{{dhs.data(), T, D, D}, {dws.data(), V, D, D}, dbs.cspan(),
                                                    d.targets.cspan(), {}},
                        d.batch(), cfg, chunk, dg, ws.data(), ws.size(),
                        grpokit::fused_outputs<R>{dlogp.span(), dent.span(), dp2.span()}, norms);
  INFO("T " << T << " V " << V << " D " << D << " chunk " << chunk);
  CHECK(support::close(got.loss, want.loss, 1e-4, 1e-6));
  CHECK(got.metrics.tokens == want.metrics.tokens);
  CHECK(got.metrics.masked_tokens_vocab_prune == want.metrics.masked_tokens_vocab_prune);
  if (sampler) CHECK(want.metrics.masked_tokens_vocab_prune > 0);
  CHECK(support::close(got.metrics.entropy_mean, want.metrics.entropy_mean, 1e-4, 1e-6));
  const auto gl = dlogp.host(), ge = dent.host(), gp2 = dp2.host();
  for (std::int64_t t = 0; t < T; ++t) {
    CHECK((gl[t] == hlogp[t] || support::close(gl[t], hlogp[t], 1e-3, 1e-4)));  // -inf outside the support
    CHECK(support::close(ge[t], hent[t], 1e-3, 1e-4));
    CHECK(support::close(gp2[t], hp2[t], 1e-3, 1e-5));
  }
  // the norms: the device's sums of the same stored dlogits in Accum against the host's in double,
  // each value to 1e-3 of itself
  const auto dr = d_rollout.host(), dgr = d_group.host(), db1 = d_batch.host();
  double norm_scale = h_batch;
  for (double x : h_rollout) norm_scale = std::max(norm_scale, x);
  for (std::int64_t s = 0; s < p.S; ++s) CHECK(support::close(dr[s], h_rollout[s], 1e-3, 1e-9 * norm_scale));
  for (std::size_t k = 0; k < B; ++k) CHECK(support::close(dgr[k], h_group[k], 1e-3, 1e-9 * norm_scale));
  CHECK(support::close(db1[0], h_batch, 1e-3, 1e-9 * norm_scale));
  CHECK(norm_scale > 0);
  // a workspace sized without the norms' sums is refused
  const std::size_t without_norms = grpokit::device::linear_workspace_bytes<P>({T, V, p.S}, chunk);
  REQUIRE_ERROR(call(grpokit::linear_input<S, R>{{dhs.data(), T, D, D}, {dws.data(), V, D, D}, dbs.cspan(),
                                                 d.targets.cspan(), {}},
                     d.batch(), cfg, chunk, dg, ws.data(), without_norms, grpokit::fused_outputs<R>{}, norms),
                "workspace too small");
  // dweight in the storage type (bf16/fp64 as given) or accumulated in R: compared as R
  const std::vector<R> gw = dweight_in_storage ? support::cast<R>(support::to_double(ddws.host())) : ddw.host();
  if (dweight_in_storage) dw = support::cast<R>(support::to_double(dws_host));
  const auto gb = ddb.host();
  const auto gh = support::to_double(ddh.host()), wh = support::to_double(dh);
  double scale = 0;
  for (R x : dw) scale = std::max(scale, std::fabs(static_cast<double>(x)));
  for (std::size_t i = 0; i < dw.size(); ++i) CHECK(std::fabs(gw[i] - dw[i]) <= 1e-2 * scale);
  for (std::size_t i = 0; i < db.size(); ++i) CHECK(std::fabs(gb[i] - db[i]) <= 1e-2 * scale + 1e-6);
  for (std::size_t i = 0; i < wh.size(); ++i) CHECK(std::fabs(gh[i] - wh[i]) <= 1e-2 * std::fabs(wh[i]) + 1e-4);
}

// The shapes of both linear cases: token chunks that do and do not divide T (a last partial chunk),
// a bias or none, dweight accumulated in Accum or in the storage type, rows on the warp (V <= 4096)
// and block (V > 4096) schedules, fp32, bf16 and fp64 (with the sampler's support).
template <class Run>
void linear_shapes(const Run& run) {
  run(grpokit::policy<grpokit::precision<float, float>>{}, sized(37, 11), sized(1000, 300), 64, sized(16, 4), true,
      false, false);
  run(grpokit::policy<grpokit::precision<__nv_bfloat16, float>, grpokit::reduction::batch_invariant>{}, sized(100, 13),
      sized(5003, 4099), sized(128, 8), sized(33, 5), false, true, false);
  run(grpokit::policy<grpokit::precision<double, double>, grpokit::chunk<64>>{}, 9, 300, 16, 3, true, true, true);
}

}  // namespace

TEST_CASE("device fused_linear_loss: its own kernels with a reference GEMM match the host", "[device][slow]") {
  // Everything of device::fused_linear_loss but the cuBLAS call (which the simulated GPU cannot run).
  linear_shapes([](auto policy_tag, std::int64_t T, std::int64_t V, std::int64_t D, std::int64_t chunk, bool bias,
                   bool dweight_in_storage, bool sampler) {
    using P = decltype(policy_tag);
    linear_matches_host<P>(
        [](const auto& in, const auto& batch, const auto& cfg, std::int64_t c, const auto& grads, void* ws,
           std::size_t bytes, const auto& extra, const auto& norms) {
          grpokit::detail::fused_linear_loss_with<P>(reference_gemm{0}, in, batch, cfg, c, grads, ws, bytes, 0, extra,
                                                     norms);
          return grpokit::device::read_loss_result(ws, 0);
        },
        T, V, D, chunk, bias, dweight_in_storage, sampler);
  });
}

TEST_CASE("device fused_linear_loss matches the host fused_linear_loss", "[device][linear]") {
  cublasHandle_t handle;
  REQUIRE(cublasCreate(&handle) == CUBLAS_STATUS_SUCCESS);
  linear_shapes([&](auto policy_tag, std::int64_t T, std::int64_t V, std::int64_t D, std::int64_t chunk, bool bias,
                    bool dweight_in_storage, bool sampler) {
    using P = decltype(policy_tag);
    linear_matches_host<P>(
        [&](const auto& in, const auto& batch, const auto& cfg, std::int64_t c, const auto& grads, void* ws,
            std::size_t bytes, const auto& extra, const auto& norms) {
          return grpokit::device::fused_linear_loss<P>(in, batch, cfg, c, grads, handle, ws, bytes, 0, extra, norms);
        },
        T, V, D, chunk, bias, dweight_in_storage, sampler);
  });
  cublasDestroy(handle);
}

namespace {
__global__ void hash_fill(__nv_bfloat16* x, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    std::uint64_t h = static_cast<std::uint64_t>(i) * 0x9E3779B97F4A7C15ull;
    h ^= h >> 29;
    x[i] = __float2bfloat16_rn(static_cast<float>(h % 20000) / 1000.0f - 10.0f);
  }
}
}  // namespace

TEST_CASE("device rows beyond 2^31 elements (64-bit indexing) match the host bitwise", "[device][large]") {
  using P = bi<__nv_bfloat16, float>;
  const std::int64_t T = 16400, V = 131072;  // T * V > 2^31
  std::size_t free_bytes = 0, total = 0;
  GRPOKIT_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
  if (free_bytes < 10ull << 30) {
    WARN("not enough GPU memory for the > 2^31-element test; skipped");
    return;
  }
  buffer<__nv_bfloat16> logits(static_cast<std::size_t>(T * V)), dlogits(static_cast<std::size_t>(T * V));
  hash_fill<<<4096, 256>>>(logits.data(), T * V);
  GRPOKIT_CUDA_CHECK_LAUNCH();
  std::vector<std::int64_t> tg(static_cast<std::size_t>(T));
  for (std::int64_t t = 0; t < T; ++t) tg[t] = (t * 7919) % V;
  buffer<std::int64_t> targets(tg);
  buffer<float> logp(T), ent(T), lse(T), g(std::vector<float>(static_cast<std::size_t>(T), 0.25f)), ge(T);
  GRPOKIT_CUDA_CHECK(cudaMemset(ge.data(), 0, T * sizeof(float)));
  buffer<unsigned char> ws(grpokit::device::workspace_bytes<P>({T, V, 1}));
  const grpokit::logits_input<__nv_bfloat16, float> in{{logits.data(), T, V, V}, targets.cspan(), {}};
  grpokit::device::token_logprobs<P>(in, {}, {logp.span(), ent.span(), lse.span()}, ws.data(), ws.size());
  grpokit::device::logits_backward<P>(in, {lse.cspan(), ent.cspan(), g.cspan(), ge.cspan()}, {}, {dlogits.data(), T, V, V},
                                      ws.data(), ws.size());
  grpokit::device::throw_if_error(grpokit::device::read_status(ws.data(), 0));
  // the last rows, recomputed on the host
  const std::int64_t rows = 2, first = T - rows;
  std::vector<__nv_bfloat16> host_rows(static_cast<std::size_t>(rows * V)), dev_grad(host_rows.size());
  GRPOKIT_CUDA_CHECK(cudaMemcpy(host_rows.data(), logits.data() + first * V, rows * V * 2, cudaMemcpyDeviceToHost));
  GRPOKIT_CUDA_CHECK(cudaMemcpy(dev_grad.data(), dlogits.data() + first * V, rows * V * 2, cudaMemcpyDeviceToHost));
  std::vector<std::int64_t> ht(tg.end() - rows, tg.end());
  std::vector<float> hl(rows), he(rows), hs(rows), hg(rows, 0.25f), hz(rows, 0.f);
  const grpokit::logits_input<__nv_bfloat16, float> hin{{host_rows.data(), rows, V, V}, ht, {}};
  grpokit::host::token_logprobs<P>(hin, {}, {hl, he, hs});
  std::vector<__nv_bfloat16> hgrad(host_rows.size());
  grpokit::host::logits_backward<P>(hin, {hs, he, hg, hz}, {}, {hgrad.data(), rows, V, V});
  const auto dl = logp.host(), dh = ent.host();
  for (std::int64_t r = 0; r < rows; ++r) {
    CHECK(std::memcmp(&dl[first + r], &hl[r], sizeof(float)) == 0);
    CHECK(std::memcmp(&dh[first + r], &he[r], sizeof(float)) == 0);
  }
  CHECK(support::same_bits(dev_grad, hgrad));
}

TEST_CASE("device bad input: scaled overflow, tiny temperatures, NaN in a backward of its own", "[device][errors]") {
  using P = bi<float, float, grpokit::chunk<16>>;
  const ref::problem good = make(31, {3, 4}, 40, false);
  grpokit::loss_config cfg;
  cfg.temperature = 0.7;
  {  // -FLT_MAX / 0.7 = -inf: p = 0, finite results, the host's bits
    ref::problem p = good;
    p.logits[5] = -FLT_MAX;
    p.logits[2 * p.V + 7] = -FLT_MAX;
    auto h = support::host_run<P>{};
    h.logits = support::to_storage<float>(p.logits);
    std::vector<float> logp(p.T), ent(p.T), lse(p.T);
    grpokit::host::token_logprobs<P>(h.input(p), cfg, {logp, ent, lse});
    device_problem<P> d(p);
    buffer<float> dlogp(p.T), dent(p.T), dlse(p.T);
    grpokit::device::token_logprobs<P>(d.input(), cfg, {dlogp.span(), dent.span(), dlse.span()}, d.ws(), d.ws_bytes());
    grpokit::device::throw_if_error(grpokit::device::read_status(d.ws(), 0));
    CHECK(support::same_bits(dlogp.host(), logp));
    CHECK(support::same_bits(dent.host(), ent));
    for (float e : ent) CHECK(std::isfinite(e));
  }
  {  // +-FLT_MAX in one row at temperature 1: differences overflow to -inf, weights 0, the host's bits
    ref::problem p = good;
    for (std::int64_t t = 0; t < p.T; ++t) {
      p.logits[static_cast<std::size_t>(t * p.V + 3)] = FLT_MAX;
      p.logits[static_cast<std::size_t>(t * p.V + 17)] = -FLT_MAX;
    }
    auto h = support::host_run<P>{};
    h.logits = support::to_storage<float>(p.logits);
    std::vector<float> logp(p.T), ent(p.T), lse(p.T);
    grpokit::host::token_logprobs<P>(h.input(p), {}, {logp, ent, lse});
    device_problem<P> d(p);
    buffer<float> dlogp(p.T), dent(p.T), dlse(p.T);
    grpokit::device::token_logprobs<P>(d.input(), {}, {dlogp.span(), dent.span(), dlse.span()}, d.ws(), d.ws_bytes());
    grpokit::device::throw_if_error(grpokit::device::read_status(d.ws(), 0));
    CHECK(support::same_bits(dent.host(), ent));
    CHECK(support::same_bits(dlse.host(), lse));
    for (float e : ent) CHECK(std::isfinite(e));
  }
  {  // FLT_MAX / 0.7 = +inf: the row overflows
    ref::problem p = good;
    p.logits[3 * p.V + 2] = FLT_MAX;
    device_problem<P> d(p);
    buffer<float> dl(p.logits.size());
    REQUIRE_ERROR((grpokit::device::fused_loss<P>(d.input(), d.batch(), cfg, {dl.data(), p.T, p.V, p.V}, d.ws(),
                                                  d.ws_bytes())),
                  "non-finite input at row/token 3");
  }
  {  // a per-token temperature with no finite inverse in float
    ref::problem p = good;
    p.temperature.assign(static_cast<std::size_t>(p.T), 1.0);
    p.temperature[4] = 1e-39;
    device_problem<P> d(p);
    buffer<float> dlogp(p.T), dlse(p.T);
    grpokit::device::token_logprobs<P>(d.input(), {}, {dlogp.span(), {}, dlse.span()}, d.ws(), d.ws_bytes());
    REQUIRE_ERROR(grpokit::device::throw_if_error(grpokit::device::read_status(d.ws(), 0)),
                  "input out of its domain at row/sequence/group 4");
  }
  {  // logits_backward on its own, NaN logits, check_finite on
    ref::problem p = good;
    p.logits[2 * p.V + 1] = std::numeric_limits<double>::quiet_NaN();
    device_problem<P> d(p);
    buffer<float> lse(std::vector<float>(p.T, 3.f)), ent(std::vector<float>(p.T, 1.f)),
        g(std::vector<float>(p.T, 0.5f)), dl(p.logits.size());
    grpokit::device::logits_backward<P>(d.input(), {lse.cspan(), ent.cspan(), g.cspan(), {}}, {},
                                        {dl.data(), p.T, p.V, p.V}, d.ws(), d.ws_bytes());
    REQUIRE_ERROR(grpokit::device::throw_if_error(grpokit::device::read_status(d.ws(), 0)),
                  "non-finite input at row/token 2");
  }
}

TEST_CASE("device fused_linear_loss reports a NaN hidden state at its token, not its row in a chunk",
          "[device][errors]") {
  using P = grpokit::policy<grpokit::precision<float, float>, grpokit::chunk<16>>;
  const std::int64_t T = 7, V = 30, Dm = 4, chunk = 3;
  ref::problem p = make(41, {3, 4}, V, false);
  std::vector<float> hid(static_cast<std::size_t>(T * Dm), 0.1f), w(static_cast<std::size_t>(V * Dm), 0.05f);
  hid[static_cast<std::size_t>(5 * Dm + 2)] = std::numeric_limits<float>::quiet_NaN();  // token 5: chunk 1, row 2
  device_problem<P> d(p);
  buffer<float> dh(hid), dw(w), ddh(hid.size()), ddw(std::vector<float>(w.size(), 0.f));  // dweight_acc adds
  buffer<unsigned char> ws(grpokit::device::linear_workspace_bytes<P>({T, V, p.S}, chunk));
  grpokit::linear_grads<float, float> g;
  g.dhidden = {ddh.data(), T, Dm, Dm};
  g.dweight_acc = {ddw.data(), V, Dm, Dm};
  std::size_t bytes = ws.size();
  grpokit::detail::fused_linear_loss_with<P>(reference_gemm{0},
                                             {{dh.data(), T, Dm, Dm}, {dw.data(), V, Dm, Dm}, {}, d.targets.cspan(), {}},
                                             d.batch(), {}, chunk, g, ws.data(), bytes, 0, {});
  REQUIRE_ERROR(grpokit::device::read_loss_result(ws.data(), 0), "non-finite input at row/token 5");
}


TEST_CASE("device asynchronous forms: results stay on the device until read; two-phase sizes; any alignment",
          "[device][async]") {
  using P = bi<float, float, grpokit::chunk<64>, grpokit::mask::trust_region>;
  const ref::problem base = make(51, lengths_for(sized(40, 12)), sized(3001, 1201), false);
  ref::problem p = base;
  {
    std::mt19937_64 rng(3);
    std::vector<ref::ld> logp(static_cast<std::size_t>(p.T), ref::ld(-2));
    ref::add_policies(rng, p, logp, 0.3);
  }
  grpokit::loss_config cfg = grpokit::presets::grpo::config();
  cfg.entropy_coef = 0.01;
  cfg.trm_max_threshold = 1.0;
  device_problem<P> d(p);
  // the synchronous form, on its own workspace
  buffer<float> want_dl(p.logits.size());
  const auto want = grpokit::device::fused_loss<P>(d.input(), d.batch(), cfg, {want_dl.data(), p.T, p.V, p.V}, d.ws(),
                                                   d.ws_bytes());
  // two-phase: a null workspace asks for the size; then an unaligned pointer into a larger buffer
  std::size_t bytes = 0;
  buffer<float> dl(p.logits.size());
  grpokit::device::fused_loss_async<P>(d.input(), d.batch(), cfg, {dl.data(), p.T, p.V, p.V}, nullptr, bytes);
  CHECK(bytes == grpokit::device::workspace_bytes<P>({p.T, p.V, p.S}));
  buffer<unsigned char> raw(bytes + 7);
  void* ws = raw.data() + 7;  // not 256-byte aligned: the library aligns it
  cudaStream_t stream;
  GRPOKIT_CUDA_CHECK(cudaStreamCreate(&stream));
  grpokit::device::fused_loss_async<P>(d.input(), d.batch(), cfg, {dl.data(), p.T, p.V, p.V}, ws, bytes, stream);
  // the loss is in device memory, where results_of says
  const grpokit::device::workspace_results at = grpokit::device::results_of(ws);
  double loss_on_device = 0;
  GRPOKIT_CUDA_CHECK(cudaMemcpyAsync(&loss_on_device, &at.loss->loss, sizeof(double), cudaMemcpyDeviceToHost, stream));
  const auto got = grpokit::device::read_loss_result(ws, stream);
  CHECK(std::memcmp(&got.loss, &want.loss, sizeof(double)) == 0);
  CHECK(std::memcmp(&loss_on_device, &want.loss, sizeof(double)) == 0);
  CHECK(got.metrics.masked_seqs_trust_region == want.metrics.masked_seqs_trust_region);
  CHECK(got.metrics.tokens_kept == want.metrics.tokens_kept);
  CHECK(support::same_bits(dl.host(), want_dl.host()));
  // policy_loss_async: the synchronising form's result, read later
  {
    buffer<float> lp(p.T), en(p.T), ls(p.T), g1(p.T), g2(p.T), e1(p.T), e2(p.T);
    grpokit::device::token_logprobs<P>(d.input(), cfg, {lp.span(), en.span(), ls.span()}, d.ws(), d.ws_bytes());
    const auto want_pl = grpokit::device::policy_loss<P>({lp.cspan(), en.cspan()}, d.batch(), cfg,
                                                         {g1.span(), e1.span()}, d.ws(), d.ws_bytes());
    std::size_t pl_bytes = bytes;
    grpokit::device::policy_loss_async<P>({lp.cspan(), en.cspan()}, d.batch(), cfg, {g2.span(), e2.span()}, ws,
                                          pl_bytes, stream);
    const auto got_pl = grpokit::device::read_loss_result(ws, stream);
    CHECK(std::memcmp(&got_pl.loss, &want_pl.loss, sizeof(double)) == 0);
    CHECK(support::same_bits(g2.host(), g1.host()));
  }
  // compute_advantages_async the same way
  REQUIRE(p.S >= 2);
  std::vector<std::int64_t> groups{0, 1, p.S};  // a singleton and the rest
  std::vector<float> rewards(static_cast<std::size_t>(p.S));
  for (std::int64_t i = 0; i < p.S; ++i) rewards[static_cast<std::size_t>(i)] = static_cast<float>((i * 7) % 3) * 0.5f;
  buffer<float> dr(rewards), da(p.S), db(p.S);
  buffer<std::int64_t> dg(groups);
  buffer<std::uint8_t> dk(p.S), dk2(p.S);
  const auto want_stats = grpokit::device::compute_advantages<P>({dr.cspan(), dg.cspan(), {}, {}}, cfg.adv,
                                                                 {da.span(), dk.span()}, d.ws(), d.ws_bytes());
  std::size_t adv_bytes = 0;
  grpokit::device::compute_advantages_async<P>({dr.cspan(), dg.cspan(), {}, {}}, cfg.adv, {db.span(), dk2.span()},
                                               nullptr, adv_bytes);
  CHECK(adv_bytes <= bytes);
  grpokit::device::compute_advantages_async<P>({dr.cspan(), dg.cspan(), {}, {}}, cfg.adv, {db.span(), dk2.span()}, ws,
                                               adv_bytes, stream);
  const auto got_stats = grpokit::device::read_advantage_stats(ws, stream);
  CHECK(got_stats.zero_variance_groups == want_stats.zero_variance_groups);
  CHECK(got_stats.singleton_groups == want_stats.singleton_groups);
  CHECK(std::memcmp(&got_stats.adv_std, &want_stats.adv_std, sizeof(double)) == 0);
  CHECK(support::same_bits(db.host(), da.host()));
  GRPOKIT_CUDA_CHECK(cudaStreamDestroy(stream));
}

namespace {
bool on_gpusim() {  // built for the simulated GPU (cmake/gpusim_workarounds.h)
#if defined(GRPOKIT_ON_GPUSIM)
  return true;
#else
  return false;
#endif
}
}  // namespace

TEST_CASE("device fused_loss_async captured in a CUDA graph replays to the same results", "[device][async][graph]") {
  if (on_gpusim()) {
    WARN("the simulated GPU has no CUDA graphs: graph capture skipped (the asynchronous forms are tested above)");
    return;
  }
  using P = bi<float, float, grpokit::chunk<64>>;
  ref::problem p = make(52, lengths_for(sized(30, 9)), 700, false);
  {
    std::mt19937_64 rng(5);
    ref::add_policies(rng, p, std::vector<ref::ld>(static_cast<std::size_t>(p.T), ref::ld(-2)), 0.3);
  }
  grpokit::loss_config cfg = grpokit::presets::grpo::config();
  device_problem<P> d(p);
  buffer<float> want_dl(p.logits.size()), dl(p.logits.size());
  const auto want = grpokit::device::fused_loss<P>(d.input(), d.batch(), cfg, {want_dl.data(), p.T, p.V, p.V}, d.ws(),
                                                   d.ws_bytes());
  cudaStream_t stream;
  GRPOKIT_CUDA_CHECK(cudaStreamCreate(&stream));
  cudaGraph_t graph = nullptr;
  if (cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
    (void)cudaGetLastError();
    WARN("stream capture is not supported on this device: skipped");
    GRPOKIT_CUDA_CHECK(cudaStreamDestroy(stream));
    return;
  }
  std::size_t bytes = d.ws_bytes();
  grpokit::device::fused_loss_async<P>(d.input(), d.batch(), cfg, {dl.data(), p.T, p.V, p.V}, d.ws(), bytes, stream);
  GRPOKIT_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec = nullptr;
  GRPOKIT_CUDA_CHECK(cudaGraphInstantiateWithFlags(&exec, graph, 0));
  for (int replay = 0; replay < 2; ++replay) {
    GRPOKIT_CUDA_CHECK(cudaMemsetAsync(dl.data(), 0, dl.size() * sizeof(float), stream));
    GRPOKIT_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    const auto got = grpokit::device::read_loss_result(d.ws(), stream);
    CHECK(std::memcmp(&got.loss, &want.loss, sizeof(double)) == 0);
    CHECK(support::same_bits(dl.host(), want_dl.host()));
  }
  GRPOKIT_CUDA_CHECK(cudaGraphExecDestroy(exec));
  GRPOKIT_CUDA_CHECK(cudaGraphDestroy(graph));
  // compute_advantages_async as well
  std::vector<float> rewards{1, 0, 0.5f, 1, 1, 0};
  std::vector<std::int64_t> groups{0, 3, 6};
  buffer<float> dr(rewards), da(6), db(6);
  buffer<std::int64_t> dg(groups);
  buffer<std::uint8_t> dk(6), dk2(6);
  const auto want_stats = grpokit::device::compute_advantages<P>({dr.cspan(), dg.cspan(), {}, {}}, cfg.adv,
                                                                 {da.span(), dk.span()}, d.ws(), d.ws_bytes());
  GRPOKIT_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  grpokit::device::compute_advantages_async<P>({dr.cspan(), dg.cspan(), {}, {}}, cfg.adv, {db.span(), dk2.span()},
                                               d.ws(), bytes, stream);
  GRPOKIT_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  GRPOKIT_CUDA_CHECK(cudaGraphInstantiateWithFlags(&exec, graph, 0));
  GRPOKIT_CUDA_CHECK(cudaGraphLaunch(exec, stream));
  const auto got_stats = grpokit::device::read_advantage_stats(d.ws(), stream);
  CHECK(std::memcmp(&got_stats.adv_std, &want_stats.adv_std, sizeof(double)) == 0);
  CHECK(support::same_bits(db.host(), da.host()));
  GRPOKIT_CUDA_CHECK(cudaGraphExecDestroy(exec));
  GRPOKIT_CUDA_CHECK(cudaGraphDestroy(graph));
  GRPOKIT_CUDA_CHECK(cudaStreamDestroy(stream));
}
