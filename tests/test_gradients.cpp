// d loss / d logits of fused_loss against central finite differences of the long-double
// reference loss, for every objective x aggregation x mask (and IS / KL / entropy variants).
#include <cstring>
#include <random>

#include "catch.hpp"
#include "support.hpp"

namespace {

// A user-defined mask: drops every fifth token (t % 5 == 3).
struct every_fifth_mask {
  using policy_axis = grpokit::axis::mask;
  template <class Real>
  static bool keep(const grpokit::token_view<Real>& v, const grpokit::loss_config&) {
    return v.token % 5 != 3;
  }
};
bool every_fifth(std::int64_t t) { return t % 5 != 3; }

template <class Mask>
ref::mask_features features_of() {
  using P = grpokit::policy<Mask>;
  ref::mask_features f;
  f.trust_region = P::trust_region;
  f.vocab_prune = P::vocab_prune;
  f.importance = P::importance_mask;
  return f;
}

using all_masks = grpokit::mask::all_of<grpokit::mask::trust_region, grpokit::mask::importance,
                                        grpokit::mask::vocab_prune, every_fifth_mask>;

template <class Mask>
void check_gradient(std::uint64_t seed, const grpokit::loss_config& cfg, bool per_token_temp) {
  using P = grpokit::policy<grpokit::precision<double, double>, grpokit::chunk<8>, Mask>;
  std::mt19937_64 rng(seed);
  ref::problem p = ref::make_problem(rng, {4, 1, 0, 6, 3}, 11, 1.5);
  if (per_token_temp) {
    std::uniform_real_distribution<double> u(0.5, 1.5);
    for (std::int64_t t = 0; t < p.T; ++t) p.temperature.push_back(u(rng));
  }
  ref::mask_features mf = features_of<Mask>();
  if (std::is_same<Mask, all_masks>::value) mf.custom = every_fifth;
  {
    std::vector<ref::ld> logp, ent;
    support::ref_rows(p, std::vector<ref::ld>(p.logits.begin(), p.logits.end()), cfg, mf.vocab_prune, logp, ent);
    ref::add_policies(rng, p, logp, 0.25);
  }
  const auto got = support::run_fused<P>(p, cfg);
  const support::reference_loss want(p, cfg, mf);
  const ref::loss_out base = want.at_base();
  INFO("seed " << seed << " obj " << int(cfg.obj) << " agg " << int(cfg.agg) << " is " << int(cfg.is) << " kl "
               << int(cfg.kl));
  CHECK(support::close(got.result.loss, static_cast<double>(base.loss), 1e-9, 1e-12));
  CHECK(got.result.metrics.tokens_kept == static_cast<std::int64_t>(base.kept));
  CHECK(got.result.metrics.tokens == static_cast<std::int64_t>(base.tokens));
  for (std::int64_t t = 0; t < p.T; ++t) {
    for (std::int64_t v = 0; v < p.V; ++v) {
      const double fd = static_cast<double>(want.derivative(t, v));
      const double an = got.dlogits[static_cast<std::size_t>(t * p.V + v)];
      INFO("dlogits[" << t << ", " << v << "] analytic " << an << " finite difference " << fd);
      CHECK(support::close(an, fd, 1e-5, 1e-8));
    }
  }
}

grpokit::loss_config base_config() {
  grpokit::loss_config c;
  c.eps_low = 0.2;
  c.eps_high = 0.28;
  c.norm_constant = 7;
  c.prune_rho = 0.05;
  c.trm_max_threshold = 0.6;
  c.trm_mean_threshold = 0.05;
  c.importance_lo = 0.7;
  c.importance_hi = 1.4;
  return c;
}

}  // namespace

TEMPLATE_TEST_CASE("dlogits match finite differences for every objective x aggregation", "[gradients]",
                   grpokit::mask::padding, grpokit::mask::trust_region, grpokit::mask::vocab_prune,
                   grpokit::mask::importance, all_masks) {
  std::uint64_t seed = 1000;
  for (auto obj : {grpokit::objective::ppo_clip, grpokit::objective::cispo, grpokit::objective::gspo,
                   grpokit::objective::sapo, grpokit::objective::reinforce}) {
    for (auto agg : {grpokit::aggregation::token_mean, grpokit::aggregation::token_sum,
                     grpokit::aggregation::seq_mean_token_mean, grpokit::aggregation::seq_mean_token_sum,
                     grpokit::aggregation::seq_mean_token_sum_norm}) {
      grpokit::loss_config c = base_config();
      c.obj = obj;
      c.agg = agg;
      c.kl = grpokit::kl_estimator::k3;
      c.kl_coef = 0.1;
      c.entropy_coef = 0.01;
      ++seed;
      check_gradient<TestType>(seed, c, seed % 2 == 0);
    }
  }
}

TEST_CASE("dlogits with IS corrections, KL estimators, dual clip, delta and global normalisers", "[gradients]") {
  std::uint64_t seed = 5000;
  for (auto is : {grpokit::is_correction::none, grpokit::is_correction::token_truncate,
                  grpokit::is_correction::sequence_truncate, grpokit::is_correction::token_mask,
                  grpokit::is_correction::sequence_mask}) {
    for (auto kl : {grpokit::kl_estimator::none, grpokit::kl_estimator::k1, grpokit::kl_estimator::k2,
                    grpokit::kl_estimator::k3}) {
      grpokit::loss_config c = base_config();
      c.is = is;
      c.is_min = 0.8;
      c.is_max = 1.3;
      c.kl = kl;
      c.kl_coef = 0.2;
      c.dual_clip = 1.5;
      c.delta = (seed % 3 == 0) ? 1.2 : 0.0;
      c.global_tokens = (seed % 2 == 0) ? 50 : 0;
      c.global_seqs = (seed % 2 == 0) ? 9 : 0;
      c.dp_size = (seed % 4 == 0) ? 4 : 1;
      c.agg = (seed % 2 == 0) ? grpokit::aggregation::token_mean : grpokit::aggregation::seq_mean_token_mean;
      check_gradient<grpokit::mask::padding>(++seed, c, false);
    }
  }
}

TEST_CASE("GSPO-token gradient equals the full-gradient sequence ratio under seq_mean_token_mean", "[gradients]") {
  // TRL/OpenRLHF differentiate through r_i = exp(mean_t (logp - logp_old)); verl's GSPO-token form
  // gives the same gradient for this aggregation: check grpokit against the full-gradient formula.
  using P = grpokit::policy<grpokit::precision<double, double>, grpokit::chunk<8>>;
  std::mt19937_64 rng(77);
  ref::problem p = ref::make_problem(rng, {5, 3, 7}, 9, 1.0, false);
  std::vector<ref::ld> logp0, ent0;
  grpokit::loss_config c = base_config();
  c.obj = grpokit::objective::gspo;
  c.eps_low = c.eps_high = 0.05;
  c.dual_clip = 0;
  c.agg = grpokit::aggregation::seq_mean_token_mean;
  support::ref_rows(p, std::vector<ref::ld>(p.logits.begin(), p.logits.end()), c, false, logp0, ent0);
  ref::add_policies(rng, p, logp0, 0.05);
  const auto got = support::run_fused<P>(p, c);
  auto full_gradient_loss = [&](const std::vector<ref::ld>& x) {
    std::vector<ref::ld> logp, ent;
    support::ref_rows(p, x, c, false, logp, ent);
    ref::ld loss = 0;
    for (std::int64_t s = 0; s < p.S; ++s) {
      const auto lo = p.b.seq_offsets[s], hi = p.b.seq_offsets[s + 1];
      ref::ld mean = 0;
      for (auto t = lo; t < hi; ++t) mean += logp[t] - p.b.logp_old[t];
      const ref::ld r = std::exp(mean / (hi - lo)), A = p.b.adv[s];
      loss += std::max(-A * r, -A * ref::clampl(r, 1 - c.eps_low, 1 + c.eps_high)) / p.S;
    }
    return loss;
  };
  for (std::int64_t i = 0; i < p.T * p.V; ++i) {
    std::vector<ref::ld> x(p.logits.begin(), p.logits.end());
    x[i] += 1e-6L;
    const ref::ld up = full_gradient_loss(x);
    x[i] -= 2e-6L;
    const ref::ld fd = (up - full_gradient_loss(x)) / 2e-6L;
    CHECK(support::close(got.dlogits[i], static_cast<double>(fd), 1e-5, 1e-9));
  }
}

TEST_CASE("fp32 and bf16 gradients agree with the fp64 path", "[gradients]") {
  std::mt19937_64 rng(31);
  ref::problem p = ref::make_problem(rng, {17, 4, 9}, 300, 2.0);
#if defined(GRPOKIT_HAS_CUDA_HALF)
  support::round_logits<__nv_bfloat16>(p);
#endif
  std::vector<ref::ld> logp, ent;
  grpokit::loss_config c = base_config();
  c.kl = grpokit::kl_estimator::k3;
  c.kl_coef = 0.1;
  c.entropy_coef = 0.01;
  support::ref_rows(p, std::vector<ref::ld>(p.logits.begin(), p.logits.end()), c, false, logp, ent);
  ref::add_policies(rng, p, logp, 0.2);
  const auto f64 = support::run_fused<grpokit::policy<grpokit::precision<double, double>>>(p, c);
  const auto f32 = support::run_fused<grpokit::policy<grpokit::precision<float, float>, grpokit::chunk<128>>>(p, c);
  double scale = 0;
  for (double g : f64.dlogits) scale = std::max(scale, std::fabs(g));
  CHECK(support::close(f32.result.loss, f64.result.loss, 1e-5, 1e-7));
  for (std::size_t i = 0; i < f64.dlogits.size(); ++i) CHECK(std::fabs(f32.dlogits[i] - f64.dlogits[i]) <= 1e-5 * scale);
#if defined(GRPOKIT_HAS_CUDA_HALF)
  const auto bf16 =
      support::run_fused<grpokit::policy<grpokit::precision<__nv_bfloat16, float>, grpokit::reduction::batch_invariant>>(p, c);
  CHECK(support::close(bf16.result.loss, f64.result.loss, 1e-5, 1e-7));
  for (std::size_t i = 0; i < f64.dlogits.size(); ++i) {
    const double g = grpokit::math::load<double>(bf16.dlogits[i]);
    CHECK(std::fabs(g - f64.dlogits[i]) <= std::fabs(f64.dlogits[i]) / 128 + 1e-6 * scale);  // bf16 rounding
  }
#endif
}

namespace {

// fused_loss (one pass over the rows where every token's gradient is its own) against the three
// separate steps token_logprobs -> policy_loss -> logits_backward: the same bits.
template <class P>
void check_fused_rows_bits(std::uint64_t seed, const grpokit::loss_config& cfg, grpokit::backward_mode mode) {
  using S = typename P::storage_type;
  using R = typename P::accum_type;
  std::mt19937_64 rng(seed);
  // 40 sequences of at most 7 tokens (some empty) and one of 61: rows of one sequence on several threads
  std::vector<std::int64_t> lengths;
  for (int i = 0; i < 40; ++i) lengths.push_back(static_cast<std::int64_t>(rng() % 8));
  lengths.insert(lengths.begin() + 13, 61);
  ref::problem p = ref::make_problem(rng, lengths, 37, 2.0);
  {
    std::vector<ref::ld> logp, ent;
    support::ref_rows(p, std::vector<ref::ld>(p.logits.begin(), p.logits.end()), cfg, false, logp, ent);
    ref::add_policies(rng, p, logp, 0.3);
  }
  const auto fused = support::run_fused<P>(p, cfg);  // dlogits separate from the logits
  support::host_run<P> h;
  h.logits = support::to_storage<S>(p.logits);
  support::load_batch(h, p);
  const auto in = h.input(p);
  std::vector<R> logp(p.T), ent(p.T), lse(p.T), dlogp(p.T), dent(p.T);
  grpokit::host::token_logprobs<P>(in, cfg, {logp, ent, lse});
  const auto res = grpokit::host::policy_loss<P>({logp, ent}, h.batch(p), cfg, {dlogp, dent});
  std::vector<S> dlogits(h.logits.size());
  grpokit::host::logits_backward<P>(in, {lse, ent, dlogp, dent}, cfg, {dlogits.data(), p.T, p.V, p.V});
  using terms = grpokit::detail::policy_terms<P, grpokit::detail::ops_for<P::order>>;
  const bool token_local = terms::token_local(cfg);
  INFO("seed " << seed << " obj " << int(cfg.obj) << " agg " << int(cfg.agg) << " is " << int(cfg.is)
               << " token_local " << token_local);
  CHECK(std::memcmp(&fused.result, &res, sizeof(res)) == 0);
  CHECK(std::memcmp(fused.logp.data(), logp.data(), logp.size() * sizeof(R)) == 0);
  CHECK(std::memcmp(fused.entropy.data(), ent.data(), ent.size() * sizeof(R)) == 0);
  CHECK(std::memcmp(fused.dlogits.data(), dlogits.data(), dlogits.size() * sizeof(S)) == 0);
  if (mode == grpokit::backward_mode::in_place) {  // the dlogits over the logits (one pass without check_finite)
    for (const bool check : {true, false}) {
      auto logits = h.logits;
      std::vector<R> l2(p.T), e2(p.T);
      grpokit::loss_config c = cfg;
      c.check_finite = check;
      grpokit::host::fused_loss<P>({{logits.data(), p.T, p.V, p.V}, p.targets, h.temperature}, h.batch(p), c,
                                   {logits.data(), p.T, p.V, p.V}, {l2, e2}, mode);
      CHECK(std::memcmp(logits.data(), dlogits.data(), dlogits.size() * sizeof(S)) == 0);
    }
  }
}

}  // namespace

TEMPLATE_TEST_CASE("fused_loss computes the separate steps' bits, also one row at a time", "[gradients][fused]",
                   (grpokit::policy<grpokit::precision<float, float>, grpokit::chunk<16>>),
                   (grpokit::policy<grpokit::precision<double, double>, grpokit::reduction::batch_invariant>),
                   (grpokit::policy<grpokit::precision<float, float>, grpokit::reduction::fast, grpokit::mask::vocab_prune>)) {
  std::uint64_t seed = 9000;
  for (auto obj : {grpokit::objective::ppo_clip, grpokit::objective::cispo, grpokit::objective::gspo,
                   grpokit::objective::sapo, grpokit::objective::reinforce}) {
    for (auto is : {grpokit::is_correction::none, grpokit::is_correction::token_truncate,
                    grpokit::is_correction::sequence_mask}) {
      grpokit::loss_config c = base_config();
      c.obj = obj;
      c.is = is;
      c.agg = static_cast<grpokit::aggregation>(seed % 5);
      c.kl = static_cast<grpokit::kl_estimator>(seed % 4);
      c.kl_coef = 0.1;
      c.entropy_coef = 0.01;
      c.temperature = 0.9;
      c.global_tokens = seed % 3 == 0 ? 40 : 0;
      ++seed;
      check_fused_rows_bits<TestType>(seed, c,
                                      seed % 2 == 0 ? grpokit::backward_mode::in_place : grpokit::backward_mode::separate);
    }
  }
}
