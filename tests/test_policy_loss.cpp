// policy_loss against the long-double reference: loss value, metrics, and d loss / d logp,
// d loss / d entropy by finite differences in logp space.
#include <random>

#include "catch.hpp"
#include "support.hpp"

namespace {

// A by-hand batch: the sequences' offsets and advantages (the vectors outlive it); each case adds
// the optional inputs it uses.
grpokit::rollout_batch<double> by_hand(const std::vector<std::int64_t>& off, const std::vector<double>& adv) {
  grpokit::rollout_batch<double> b;
  b.seq_offsets = off;
  b.adv = adv;
  return b;
}

template <class P>
void check_policy_loss(std::uint64_t seed, const grpokit::loss_config& cfg, ref::mask_features mf, bool on_policy,
                       double tol) {
  using R = typename P::accum_type;
  std::mt19937_64 rng(seed);
  ref::problem p = ref::make_problem(rng, {6, 0, 1, 9, 4, 11, 2}, 3);
  std::uniform_real_distribution<double> u(-4, -0.01), h(0.1, 3);
  std::vector<ref::ld> logp(p.T), ent(p.T);
  for (auto& v : logp) v = static_cast<R>(u(rng));
  for (auto& v : ent) v = static_cast<R>(h(rng));
  if (mf.vocab_prune) logp[3] = logp[10] = logp[17] = -ref::inf;  // 17: in a positive rollout (VAPO)
  ref::add_policies(rng, p, logp, 0.3);
  if (on_policy) p.b.logp_old.clear();
  // advantages per token (optimal_token_baseline): every objective and aggregation meets them, OPSM
  // (k % 7 < 3) and M2PO (k % 11 == 7) too
  if (seed % 7 == 3 || seed % 11 == 2) {
    std::mt19937_64 token_rng(seed + 991);
    std::normal_distribution<double> a(0, 1);
    for (std::int64_t t = 0; t < p.T; ++t) p.b.token_adv.push_back(a(token_rng));
  }
  for (auto* v : {&p.b.logp_old, &p.b.logp_ref, &p.b.logp_rollout, &p.b.adv, &p.b.token_adv})
    for (auto& x : *v) x = static_cast<R>(x);

  const auto rl = support::cast<R>(logp), re = support::cast<R>(ent);
  const auto adv = support::cast<R>(p.b.adv), old = support::cast<R>(p.b.logp_old),
             refp = support::cast<R>(p.b.logp_ref), roll = support::cast<R>(p.b.logp_rollout),
             token_adv = support::cast<R>(p.b.token_adv);
  const auto tm = support::bytes(p.b.token_mask), sm = support::bytes(p.b.seq_mask), pos = support::bytes(p.b.positive);
  grpokit::rollout_batch<R> b{p.b.seq_offsets, adv, old, refp, roll, tm, sm, pos, token_adv};
  std::vector<R> dlogp(p.T), dent(p.T);
  const auto res = grpokit::host::policy_loss<P>({rl, re}, b, cfg, {dlogp, dent});

  const auto want = ref::policy_loss(logp, ent, logp, p.b, cfg, mf);
  INFO("seed " << seed << " obj " << int(cfg.obj) << " is " << int(cfg.is) << " kl " << int(cfg.kl) << " token_adv "
                << !p.b.token_adv.empty());
  CHECK(support::close(res.loss, static_cast<double>(want.loss), tol, tol));
  const auto& m = res.metrics;
  CHECK(m.tokens == static_cast<std::int64_t>(want.tokens));
  CHECK(m.tokens_kept == static_cast<std::int64_t>(want.kept));
  CHECK(m.masked_tokens_vocab_prune == static_cast<std::int64_t>(want.masked_prune));
  CHECK(m.masked_tokens_importance == static_cast<std::int64_t>(want.masked_importance));
  CHECK(m.masked_tokens_sequence == static_cast<std::int64_t>(want.masked_sequence));
  CHECK(m.masked_seqs_trust_region == static_cast<std::int64_t>(want.seqs_trm));
  CHECK(m.masked_seqs_opsm == static_cast<std::int64_t>(want.seqs_opsm));
  CHECK(m.masked_tokens_dppo == static_cast<std::int64_t>(want.masked_dppo));
  CHECK(m.masked_tokens_m2po == static_cast<std::int64_t>(want.masked_m2po));
  CHECK((cfg.m2po_threshold == INFINITY || p.T == 0 || m.masked_tokens_m2po > 0));  // the M2PO mask bites
  CHECK(support::close(m.mismatch_chi2_token, static_cast<double>(want.chi2_token), tol, tol));
  CHECK(support::close(m.mismatch_chi2_seq, static_cast<double>(want.chi2_seq), tol, tol));
  CHECK(support::close(m.mismatch_ppl_ratio, static_cast<double>(want.ppl_ratio), tol, tol));
  CHECK(support::close(m.is_batch_norm_factor, static_cast<double>(want.is_divisor), tol, tol));
  CHECK(support::close(m.loss_nll, static_cast<double>(want.nll), tol, tol));
  CHECK(m.masked_tokens_entropy == static_cast<std::int64_t>(want.masked_entropy));
  CHECK(m.cov_tokens == static_cast<std::int64_t>(want.cov_selected));
  if (cfg.top_entropy_quantile < 1)
    CHECK(support::close(m.entropy_threshold, static_cast<double>(want.entropy_threshold), tol, tol));
  if (want.kept > 0) {
    CHECK(m.clip_frac_low == Approx(static_cast<double>(want.clip_low / want.kept)));
    CHECK(m.clip_frac_high == Approx(static_cast<double>(want.clip_high / want.kept)));
    CHECK(m.clip_frac_dual == Approx(static_cast<double>(want.dual / want.kept)));
    CHECK(m.is_weight_min == Approx(static_cast<double>(want.w_min)));
    CHECK(m.is_weight_max == Approx(static_cast<double>(want.w_max)));
    CHECK(m.is_weight_mean == Approx(static_cast<double>(want.w_sum / want.kept)));
  }
  // derivatives by central differences of the reference in (logp, entropy)
  for (std::int64_t t = 0; t < p.T; ++t) {
    if (logp[t] == -ref::inf) {
      CHECK(dlogp[t] == 0);
      continue;
    }
    const ref::ld step = 1e-7L;
    auto lp = logp;
    lp[t] += step;
    const ref::ld up = ref::policy_loss(lp, ent, logp, p.b, cfg, mf).loss;
    lp[t] -= 2 * step;
    const ref::ld fd = (up - ref::policy_loss(lp, ent, logp, p.b, cfg, mf).loss) / (2 * step);
    auto en = ent;
    en[t] += step;
    const ref::ld fde = (ref::policy_loss(logp, en, logp, p.b, cfg, mf).loss - want.loss) / step;
    INFO("token " << t);
    CHECK(support::close(dlogp[t], static_cast<double>(fd), 1e-6, tol));
    CHECK(support::close(dent[t], static_cast<double>(fde), 1e-6, tol));
  }
}

grpokit::loss_config config(std::uint64_t k) {
  grpokit::loss_config c;
  const grpokit::objective objs[] = {grpokit::objective::ppo_clip, grpokit::objective::cispo,
                                     grpokit::objective::gspo,     grpokit::objective::sapo,
                                     grpokit::objective::reinforce, grpokit::objective::gmpo};
  const grpokit::is_correction iss[] = {grpokit::is_correction::none, grpokit::is_correction::token_truncate,
                                        grpokit::is_correction::sequence_truncate, grpokit::is_correction::token_mask,
                                        grpokit::is_correction::sequence_mask};
  const grpokit::kl_estimator kls[] = {grpokit::kl_estimator::none, grpokit::kl_estimator::k1,
                                       grpokit::kl_estimator::k2, grpokit::kl_estimator::k3};
  c.obj = objs[k % 6];  // 6 against the 5 aggregations: every objective meets every aggregation
  c.is = iss[(k / 5) % 5];
  c.kl = kls[(k / 25) % 4];
  c.kl_coef = 0.3;
  c.entropy_coef = 0.02;
  c.eps_low = 0.15;  // asymmetric: a swapped bound fails
  c.eps_high = 0.25;
  c.is_min = 0.5;
  c.is_max = 1.5;
  c.agg = static_cast<grpokit::aggregation>(k % 5);
  c.norm_constant = 13;
  c.trm_max_threshold = 0.5;
  c.trm_mean_estimator = static_cast<grpokit::divergence>(k % 3);
  c.trm_max_estimator = static_cast<grpokit::divergence>((k / 3) % 3);
  c.trm_mean_threshold = 0.1;
  c.importance_sequence = k % 2 == 1;
  c.importance_lo = 0.8;
  c.importance_hi = 1.25;
  if (k % 7 < 3) c.opsm_threshold = (k % 7) * 0.05;  // OPSM with delta 0, 0.05, 0.1 in 3 configs of 7
  // DPPO: TV in a quarter of the configs, the Bernoulli KL in another, with bounds that bite; k / 5,
  // not k: a selector sharing a factor with the objective's k % 6 would meet only half the objectives
  if ((k / 5) % 4 == 1) {
    c.dppo = grpokit::dppo_divergence::tv;
    c.dppo_low = 0.03;
    c.dppo_high = 0.05;
  } else if ((k / 5) % 4 == 3) {
    c.dppo = grpokit::dppo_divergence::binary_kl;
    c.dppo_low = 0.01;
    c.dppo_high = 0.02;
  }
  c.entropy_token_mean = k % 3 == 2;
  c.kl_straight_through = k % 5 == 3;
  c.kl_is_weighted = (k / 7) % 3 == 1;  // meets gspo and gmpo (k % 3 == 1 never does)
  c.cispo_clip_frac_any_sign = k % 4 == 1;  // k % 6 == 1 (cispo) is odd: both settings occur
  c.is_batch_normalize = (k / 2) % 2 == 0;  // meets every IS mode, objective and importance level
  c.positive_nll_coef = (k / 4) % 3 == 1 ? 0.7 : 0.0;
  c.dp_size = k % 4 == 2 ? 3 : 1;
  // TRL's top-entropy mask: interpolated (0.6: between two entropies), at an end (0), or off
  const double rhos[] = {1.0, 0.6, 1.0, 0.0, 0.35};
  c.top_entropy_quantile = rhos[(k / 3) % 5];
  // AReaL's M2PO: thresholds under the mean second moment (about 0.18 here), and 0 (one value stays)
  const double taus[] = {0.04, 0.01, 0.0};
  if (k % 11 == 7) c.m2po_threshold = taus[(k / 11) % 3];  // 11: coprime to the objectives' 6
  if (k % 11 == 4) {  // verl's KL-Cov: a large ratio, so that several tokens are selected
    c.obj = grpokit::objective::kl_cov;
    c.kl_cov_ratio = (k / 11) % 2 == 0 ? 0.3 : 0.01;  // 0.01: max(1, 0) = one token
    c.ppo_kl_coef = 0.5;
  }
  if (k % 13 == 6) {  // verl's Clip-Cov: a band that holds part of the tokens, a seed per config
    c.obj = grpokit::objective::clip_cov;
    c.clip_cov_ratio = (k / 13) % 2 == 0 ? 0.3 : 0.01;
    c.clip_cov_lb = -0.3;
    c.clip_cov_ub = 0.4;
    c.clip_cov_seed = 1000 + k;
    c.dual_clip = 1.2;  // verl's Clip-Cov has none: a dual clip that would bite must not apply
    c.delta = 1.3;      // nor TRL's delta
  }
  return c;
}

}  // namespace

TEST_CASE("policy_loss matches the reference: objectives x IS x KL, fp64", "[policy_loss]") {
  using D = grpokit::precision<double, double>;
  for (std::uint64_t k = 0; k < 100; ++k) {
    const auto c = config(k);
    check_policy_loss<grpokit::policy<D>>(k, c, {}, k % 7 == 0, 1e-9);
    check_policy_loss<grpokit::policy<D, grpokit::mask::trust_region>>(k, c, {true, false, false}, false, 1e-9);
    check_policy_loss<grpokit::policy<D, grpokit::mask::all_of<grpokit::mask::vocab_prune, grpokit::mask::importance>>>(
        k, c, {false, true, true}, k % 3 == 0, 1e-9);
  }
}

TEST_CASE("policy_loss in fp32 accumulation stays within fp32 accuracy", "[policy_loss]") {
  for (std::uint64_t k = 0; k < 100; k += 7)
    check_policy_loss<grpokit::policy<grpokit::precision<float, float>, grpokit::reduction::batch_invariant>>(
        k, config(k), {}, false, 2e-5);
}

TEST_CASE("IS batch normalisation and VAPO's positive NLL, by hand", "[policy_loss]") {
  // on-policy REINFORCE, token_sum; logp - logp_rollout = ln 2, 0, -ln 2: token weights 2, 1, 1/2
  // (mean 7/6), sequence weights 2, 1/2 (mean 5/4); rollout 0 is the positive one
  using P = grpokit::policy<grpokit::precision<double, double>>;
  const double ln2 = std::log(2.0);
  std::vector<double> logp{-1, -2, -0.5}, roll{-1 - ln2, -2, -0.5 + ln2}, adv{1, -2}, dlogp(3);
  std::vector<std::int64_t> off{0, 2, 3};
  std::vector<std::uint8_t> positive{1, 0};
  auto b = by_hand(off, adv);
  b.logp_rollout = roll;
  b.positive = positive;
  grpokit::loss_config c;
  c.obj = grpokit::objective::reinforce;
  c.agg = grpokit::aggregation::token_sum;
  c.is_max = 10;
  c.is_batch_normalize = true;
  c.positive_nll_coef = 0.5;  // 0.5 x mean(1, 2) = 0.75, gradient -0.25 on tokens 0 and 1
  SECTION("token level: weights 12/7, 6/7, 3/7") {
    c.is = grpokit::is_correction::token_truncate;
    const auto r = grpokit::host::policy_loss<P>({logp, {}}, b, c, {dlogp, {}});
    CHECK(r.metrics.is_batch_norm_factor == Approx(7.0 / 6));
    CHECK(r.metrics.is_weight_mean == Approx(1.0));  // the applied weights average 1
    CHECK(r.metrics.loss_pg == Approx(3.0));         // 12/7 + 2 x 6/7 - 3/7
    CHECK(r.metrics.loss_nll == Approx(0.75));
    CHECK(r.loss == Approx(3.75));
    CHECK(dlogp[0] == Approx(-12.0 / 7 - 0.25));
    CHECK(dlogp[1] == Approx(-6.0 / 7 - 0.25));
    CHECK(dlogp[2] == Approx(6.0 / 7));
  }
  SECTION("sequence level: weights 8/5, 2/5") {
    c.is = grpokit::is_correction::sequence_truncate;
    const auto r = grpokit::host::policy_loss<P>({logp, {}}, b, c, {dlogp, {}});
    CHECK(r.metrics.is_batch_norm_factor == Approx(1.25));
    CHECK(r.loss == Approx(1.6 * 3 - 0.4 + 0.75));
    CHECK(dlogp[2] == Approx(0.8));
  }
  SECTION("off: the weights as they are, no NLL") {
    c.is = grpokit::is_correction::token_truncate;
    c.is_batch_normalize = false;
    c.positive_nll_coef = 0;
    b.positive = {};  // not needed then
    const auto r = grpokit::host::policy_loss<P>({logp, {}}, b, c, {dlogp, {}});
    CHECK(r.metrics.is_batch_norm_factor == 1);
    CHECK(r.loss == Approx(2.0 + 2.0 - 0.5));
    CHECK(r.metrics.loss_nll == 0);
  }
}

TEST_CASE("the top-entropy mask (TRL top_entropy_quantile), by hand", "[policy_loss]") {
  // REINFORCE, token_sum, A = 1: the loss is -sum logp over the tokens that keep their pg term.
  // Response entropies 0.1, 0.9, 0.3, 0.5 (token 2 is padding: its 5.0 is no candidate).
  using P = grpokit::policy<grpokit::precision<double, double>>;
  std::vector<double> logp{-1, -2, -4, -8, -16}, ent{0.1, 0.9, 5.0, 0.3, 0.5}, adv{1, 1}, dlogp(5), dent(5);
  std::vector<std::int64_t> off{0, 3, 5};
  std::vector<std::uint8_t> tm{1, 1, 0, 1, 1};
  auto b = by_hand(off, adv);
  b.token_mask = tm;
  grpokit::loss_config c;
  c.obj = grpokit::objective::reinforce;
  c.agg = grpokit::aggregation::token_mean;
  auto run = [&](double rho) {
    c.top_entropy_quantile = rho;
    return grpokit::host::policy_loss<P>({logp, ent}, b, c, {dlogp, dent});
  };
  SECTION("rho 0.5: the median 0.4 (between 0.3 and 0.5) keeps 0.9 and 0.5") {
    const auto r = run(0.5);
    CHECK(r.metrics.entropy_threshold == Approx(0.4));
    CHECK(r.metrics.masked_tokens_entropy == 2);
    CHECK(r.metrics.tokens == 4);  // the denominator stays
    CHECK(r.loss == Approx((2.0 + 16.0) / 4));
    CHECK(dlogp == std::vector<double>{0, -0.25, 0, 0, -0.25});
  }
  SECTION("rho 0.25: quantile 0.75 at position 2.25, 0.5 + 0.25 x 0.4 = 0.6") {
    const auto r = run(0.25);
    CHECK(r.metrics.entropy_threshold == Approx(0.6));
    CHECK(r.loss == Approx(2.0 / 4));
  }
  SECTION("rho 0: the maximum only; rho 1: off") {
    CHECK(run(0.0).metrics.masked_tokens_entropy == 3);
    const auto off_run = run(1.0);
    CHECK(off_run.metrics.masked_tokens_entropy == 0);
    CHECK(off_run.metrics.entropy_threshold == 0);
    CHECK(off_run.loss == Approx((1.0 + 2.0 + 8.0 + 16.0) / 4));
  }
  SECTION("the KL term stays on masked tokens") {
    std::vector<double> ref{-1.5, -2, -4, -8, -16};
    b.logp_ref = ref;
    c.kl = grpokit::kl_estimator::k1;
    c.kl_coef = 1;
    const auto r = run(0.0);  // keeps token 1 only (0.9)
    CHECK(r.metrics.loss_kl == Approx(0.5 / 4));
    CHECK(dlogp[0] == Approx(0.25));  // k1's gradient only
  }
  SECTION("needs the entropy input, and rho in [0, 1]") {
    c.top_entropy_quantile = 0.5;
    REQUIRE_ERROR(grpokit::host::policy_loss<P>({logp, {}}, b, c, {dlogp, {}}), "top_entropy_quantile < 1 needs");
    c.top_entropy_quantile = 1.5;
    REQUIRE_ERROR(grpokit::host::policy_loss<P>({logp, ent}, b, c, {dlogp, dent}), "top_entropy_quantile must be");
  }
}

TEST_CASE("M2PO (AReaL m2_threshold): the largest second moments leave, ties together, by hand", "[policy_loss]") {
  // REINFORCE, token_sum, A = 1: the loss is -sum logp over the tokens M2PO keeps. Second moments
  // (logp_rollout - logp_old)^2 = 0.25, 0.09, 0.04, 0.01, 0 (sum 0.39); token 5 is padding.
  using P = grpokit::policy<grpokit::precision<double, double>>;
  std::vector<double> logp{-1, -2, -4, -8, -16, -32}, adv{1, 1}, dlogp(6);
  std::vector<double> roll{-1.5, -2.3, -4.2, -8.1, -16, -40};
  std::vector<std::int64_t> off{0, 3, 6};
  std::vector<std::uint8_t> tm{1, 1, 1, 1, 1, 0};
  auto b = by_hand(off, adv);
  b.logp_old = logp;
  b.logp_rollout = roll;
  b.token_mask = tm;
  grpokit::loss_config c;
  c.obj = grpokit::objective::reinforce;
  c.agg = grpokit::aggregation::token_sum;
  std::int64_t tokens = 5;
  auto kept_sum = [&](double tau) {
    c.m2po_threshold = tau;
    const auto r = grpokit::host::policy_loss<P>({logp, {}}, b, c, {dlogp, {}});
    CHECK(r.metrics.tokens == tokens);  // the denominators stay
    return std::make_pair(r.loss, r.metrics.masked_tokens_m2po);
  };
  CHECK(kept_sum(1.0) == std::make_pair(31.0, std::int64_t{0}));   // mean 0.078 < 1
  CHECK(kept_sum(0.05) == std::make_pair(30.0, std::int64_t{1}));  // 0.078, then 0.14 / 4 = 0.035
  CHECK(kept_sum(0.03) == std::make_pair(28.0, std::int64_t{2}));  // 0.035, then 0.05 / 3
  CHECK(kept_sum(0.0) == std::make_pair(16.0, std::int64_t{4}));   // no mean is below 0: the smallest stays
  SECTION("equal second moments leave together") {
    // 1/16, 1/16, 0 (mean 1/24): at tau 0.04 AReaL's sort drops one 1/16 (then 1/32 < 0.04); here both go
    roll = {-1.25, -2.25, -4, -8, -16, -40};
    tm = {1, 1, 1, 0, 0, 0};
    tokens = 3;
    CHECK(kept_sum(0.04) == std::make_pair(4.0, std::int64_t{2}));
    CHECK(kept_sum(0.045) == std::make_pair(7.0, std::int64_t{0}));
  }
  SECTION("moments above 1 (the sums' high words), and a mean equal to tau") {
    roll = {-1, -4, -7, -8, -16, -40};  // 0, 4, 9 (mean 13/3)
    tm = {1, 1, 1, 0, 0, 0};
    tokens = 3;
    CHECK(kept_sum(3.0) == std::make_pair(3.0, std::int64_t{1}));  // then 2 < 3
    CHECK(kept_sum(4.4) == std::make_pair(7.0, std::int64_t{0}));
    roll = {-1, -2.5, -4, -8, -16, -40};  // 0, 0.25: the mean 0.125 is not below 0.125
    tm = {1, 1, 0, 0, 0, 0};
    tokens = 2;
    CHECK(kept_sum(0.125) == std::make_pair(1.0, std::int64_t{1}));
    CHECK(kept_sum(0.12500001) == std::make_pair(3.0, std::int64_t{0}));
  }
  SECTION("needs logp_rollout, and tau >= 0") {
    b.logp_rollout = {};
    c.m2po_threshold = 0.1;
    REQUIRE_ERROR(grpokit::host::policy_loss<P>({logp, {}}, b, c, {dlogp, {}}), "m2po_threshold < +inf needs");
    b.logp_rollout = roll;
    c.m2po_threshold = -1;
    REQUIRE_ERROR(grpokit::host::policy_loss<P>({logp, {}}, b, c, {dlogp, {}}), "m2po_threshold must be >= 0");
    // 2^31 tokens overflow its sums: refused from the sizes, before anything is read (the spans
    // only claim them)
    const std::int64_t big = std::int64_t{1} << 31;
    std::vector<std::int64_t> big_off{0, big};
    std::vector<double> one{1.0};
    auto huge = by_hand(big_off, one);
    huge.logp_rollout = {roll.data(), big};
    c.m2po_threshold = 0.1;
    REQUIRE_ERROR(grpokit::host::policy_loss<P>({{logp.data(), big}, {}}, huge, c, {{dlogp.data(), big}, {}}),
                  "m2po_threshold < +inf takes fewer than 2^31 tokens");
  }
}

TEST_CASE("KL-Cov (verl kl_cov): the top-k covariance tokens, ties to the earlier token, by hand", "[policy_loss]") {
  // A = 1, 1, 1 | -1, logp = -1, -1, -2 | -1.5: means 0.5 and -1.375, cov = 0.1875, 0.1875, -0.3125 |
  // 0.1875 (exact): a three-way tie at the top. logp_old = logp - 0.1: r = e^0.1, |d| = 0.1.
  using P = grpokit::policy<grpokit::precision<double, double>>;
  std::vector<double> logp{-1, -1, -2, -1.5}, old{-1.1, -1.1, -2.1, -1.6}, adv{1, -1}, dlogp(4);
  std::vector<std::int64_t> off{0, 3, 4};
  auto b = by_hand(off, adv);
  b.logp_old = old;
  grpokit::loss_config c;
  c.obj = grpokit::objective::kl_cov;
  c.agg = grpokit::aggregation::token_sum;
  c.ppo_kl_coef = 0.5;
  const double r = std::exp(0.1);
  auto selected = [&](double ratio) {
    c.kl_cov_ratio = ratio;
    const auto res = grpokit::host::policy_loss<P>({logp, {}}, b, c, {dlogp, {}});
    std::vector<int> sel;
    for (int t = 0; t < 4; ++t) {
      const double A = t < 3 ? 1 : -1;
      if (dlogp[t] != Approx(-A * r)) {
        CHECK(dlogp[t] == Approx(-A * r + 0.5));
        sel.push_back(t);
      }
    }
    CHECK(res.metrics.cov_tokens == static_cast<std::int64_t>(sel.size()));
    CHECK(res.loss == Approx(-r * 2 + 0.05 * static_cast<double>(sel.size())));  // -A r summed: -3r + r
    return sel;
  };
  CHECK(selected(0.25) == std::vector<int>{0});
  CHECK(selected(0.5) == std::vector<int>{0, 1});
  CHECK(selected(0.75) == std::vector<int>{0, 1, 3});
  CHECK(selected(0.1) == std::vector<int>{0});  // max(1, floor(0.4))
  CHECK(selected(0.0).empty());
  c.kl_cov_ratio = 1.5;
  REQUIRE_ERROR(grpokit::host::policy_loss<P>({logp, {}}, b, c, {dlogp, {}}), "kl_cov_ratio must be in [0, 1]");
}

TEST_CASE("token advantages equal to their sequence's give the sequence-advantage loss; their errors",
          "[policy_loss]") {
  using P = grpokit::policy<grpokit::precision<double, double>, grpokit::reduction::batch_invariant>;
  std::mt19937_64 rng(77);
  std::normal_distribution<double> n(0, 1);
  const std::vector<std::int64_t> off{0, 3, 3, 7, 8};
  std::vector<double> logp(8), ent(8, 0.5), adv{0.7, -1.2, -0.4, 1.5}, old(8), spread(8);
  for (std::size_t t = 0; t < 8; ++t) logp[t] = -1 + 0.3 * n(rng), old[t] = logp[t] + 0.1 * n(rng);
  for (std::size_t s = 0; s < 4; ++s)
    for (auto t = off[s]; t < off[s + 1]; ++t) spread[static_cast<std::size_t>(t)] = adv[s];
  for (const auto obj : {grpokit::objective::ppo_clip, grpokit::objective::gmpo, grpokit::objective::gspo,
                         grpokit::objective::kl_cov}) {
    grpokit::loss_config c;
    c.obj = obj;
    c.entropy_coef = 0.01;
    c.kl_cov_ratio = 0.4;
    c.eps_low = c.eps_high = 0.05;
    std::vector<double> d1(8), e1(8), d2(8), e2(8);
    auto b = by_hand(off, adv);
    b.logp_old = old;
    const auto plain = grpokit::host::policy_loss<P>({logp, ent}, b, c, {d1, e1});
    b.token_adv = spread;
    const auto per_token = grpokit::host::policy_loss<P>({logp, ent}, b, c, {d2, e2});
    INFO("objective " << int(obj));
    if (obj == grpokit::objective::kl_cov) {  // the covariance's advantage sum: a sum, not a product
      CHECK(per_token.loss == Approx(plain.loss).epsilon(1e-14));
    } else {
      CHECK(per_token.loss == plain.loss);
      CHECK(d2 == d1);
    }
    CHECK(per_token.metrics.adv_mean == plain.metrics.adv_mean);  // the metrics keep the sequences' adv
  }
  std::vector<double> d(8), e(8);
  auto b = by_hand(off, adv);
  std::vector<double> short_adv(7, 0.0), bad = spread;
  b.token_adv = short_adv;
  REQUIRE_ERROR(grpokit::host::policy_loss<P>({logp, ent}, b, {}, {d, e}), "token_adv");
  bad[5] = std::nan("");
  b.token_adv = bad;
  REQUIRE_ERROR(grpokit::host::policy_loss<P>({logp, ent}, b, {}, {d, e}), "token_adv[5] is not finite");
}

TEST_CASE("all tokens masked gives loss 0 and zero gradients", "[policy_loss]") {
  using P = grpokit::policy<grpokit::precision<double, double>>;
  for (auto agg : {grpokit::aggregation::token_mean, grpokit::aggregation::seq_mean_token_mean,
                   grpokit::aggregation::seq_mean_token_sum_norm}) {
    grpokit::loss_config c;
    c.agg = agg;
    c.norm_constant = 4;
    c.entropy_coef = 0.1;
    std::vector<double> logp{-1, -2, -0.5}, ent{1, 1, 1}, adv{1, -1}, dlogp(3, 9), dent(3, 9);
    std::vector<std::int64_t> off{0, 2, 3};
    std::vector<std::uint8_t> tm{0, 0, 0};
    auto b = by_hand(off, adv);
    b.token_mask = tm;
    const auto r = grpokit::host::policy_loss<P>({logp, ent}, b, c, {dlogp, dent});
    CHECK(r.loss == 0);
    CHECK(r.metrics.tokens == 0);
    CHECK(dlogp == std::vector<double>(3, 0.0));
    CHECK(dent == std::vector<double>(3, 0.0));
  }
}

TEST_CASE("an empty batch is a valid input with loss 0", "[policy_loss]") {
  using P = grpokit::policy<>;
  std::vector<float> none;
  std::vector<std::int64_t> off{0};
  grpokit::rollout_batch<float> b;
  b.seq_offsets = off;
  std::vector<float> grads;
  const auto r = grpokit::host::policy_loss<P>({none, {}}, b, {}, {grads, {}});
  CHECK(r.loss == 0);
  std::vector<float> logits;
  std::vector<std::int64_t> targets;
  const auto f = grpokit::host::fused_loss<P>({{logits.data(), 0, 5, 5}, targets, {}}, b, {}, {logits.data(), 0, 5, 5});
  CHECK(f.loss == 0);
}

TEST_CASE("an empty batch needs none of the optional inputs, whatever the mask and config", "[policy_loss]") {
  // With T == 0 an empty logp_rollout / logp_ref / entropy is a complete [T] input.
  std::vector<double> none;
  std::vector<std::int64_t> off{0};
  grpokit::rollout_batch<double> b;
  b.seq_offsets = off;
  grpokit::loss_config c = grpokit::presets::grpo::config();
  c.entropy_coef = 0.01;
  c.kl = grpokit::kl_estimator::k3;
  c.kl_coef = 0.1;
  c.is = grpokit::is_correction::token_truncate;
  const grpokit::current_policy<double> cur{none, none};
  const grpokit::policy_grads<double> g{none, none};
  using D = grpokit::precision<double, double>;
  CHECK(grpokit::host::policy_loss<grpokit::policy<D, grpokit::mask::trust_region>>(cur, b, c, g).loss == 0);
  CHECK(grpokit::host::policy_loss<grpokit::policy<D, grpokit::mask::importance>>(cur, b, c, g).loss == 0);
  CHECK(grpokit::host::policy_loss<grpokit::policy<D>>(cur, b, c, g).loss == 0);
  // with tokens, a missing input is still an error
  std::vector<double> one{-1.0}, adv{1.0};
  std::vector<std::int64_t> off1{0, 1};
  grpokit::rollout_batch<double> b1;
  b1.seq_offsets = off1;
  b1.adv = adv;
  b1.logp_ref = one;
  b1.logp_rollout = one;
  const grpokit::policy_grads<double> g1{one, one};
  REQUIRE_ERROR((grpokit::host::policy_loss<grpokit::policy<D, grpokit::mask::trust_region>>({one, none}, b1, c, g1)),
                "entropy_coef != 0 needs");
  b1.logp_rollout = {};
  c.entropy_coef = 0;
  c.is = grpokit::is_correction::none;
  REQUIRE_ERROR((grpokit::host::policy_loss<grpokit::policy<D, grpokit::mask::trust_region>>({one, none}, b1, c, g1)),
                "masks need logp_rollout");
}
