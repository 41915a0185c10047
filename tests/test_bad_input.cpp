// Inputs a new user tries that once passed validation and gave a silent NaN, a wrong result or a
// crash: each now gives a clear grpokit::error or a documented finite result.
#include <cfloat>
#include <cmath>
#include <limits>
#include <random>

#include "catch.hpp"
#include "support.hpp"

namespace {

using F = grpokit::policy<grpokit::precision<float, float>, grpokit::chunk<16>>;
using D = grpokit::policy<grpokit::precision<double, double>, grpokit::chunk<16>>;
constexpr double inf = std::numeric_limits<double>::infinity();
constexpr double qnan = std::numeric_limits<double>::quiet_NaN();

bool all_finite(const std::vector<float>& x) {
  for (float v : x)
    if (!std::isfinite(v)) return false;
  return true;
}

// One small batch: T tokens in two sequences over V columns, with old / ref / rollout log-probs.
struct batch_fixture {
  std::int64_t T = 6, V = 9;
  std::vector<float> logits;
  std::vector<std::int64_t> targets{0, 3, 8, 1, 5, 2};
  std::vector<std::int64_t> seq_offsets{0, 2, 6};
  std::vector<float> adv{1.0f, -0.5f};
  std::vector<float> logp_old, logp_ref, logp_rollout;
  std::vector<std::uint8_t> positive;
  std::vector<float> dlogits;
  batch_fixture() : logits(static_cast<std::size_t>(T * V)), dlogits(logits.size()) {
    std::mt19937 rng(7);
    std::normal_distribution<float> n(0, 1.5f);
    for (float& x : logits) x = n(rng);
    for (std::int64_t t = 0; t < T; ++t) {
      logp_old.push_back(-1.0f - 0.1f * static_cast<float>(t));
      logp_ref.push_back(-1.2f);
      logp_rollout.push_back(-1.1f);
    }
  }
  grpokit::logits_input<float, float> input(grpokit::span<const float> temperature = {}) const {
    return {{logits.data(), T, V, V}, targets, temperature};
  }
  grpokit::rollout_batch<float> batch() const {
    grpokit::rollout_batch<float> b;
    b.seq_offsets = seq_offsets;
    b.adv = adv;
    b.logp_old = logp_old;
    b.logp_ref = logp_ref;
    b.logp_rollout = logp_rollout;
    b.positive = positive;
    return b;
  }
  template <class P = F>
  grpokit::loss_result fused(const grpokit::loss_config& c) {
    return grpokit::host::fused_loss<P>(input(), batch(), c, {dlogits.data(), T, V, V});
  }
};

}  // namespace

TEST_CASE("pack_padded: gather checks the padded size, and B * L must fit in an int64", "[bad_input]") {
  const std::vector<std::uint8_t> mask{1, 1, 0, 1, 0, 0};
  const auto p = grpokit::host::pack_padded(mask, 2, 3);
  const std::vector<float> good{1, 2, 3, 4, 5, 6}, short_one{1, 2, 3};
  CHECK(p.gather<float>(good) == std::vector<float>{1, 2, 4});
  REQUIRE_ERROR(p.gather<float>(short_one), "padded: expected 6 elements, got 3");
  const std::int64_t big = std::int64_t{1} << 32;
  REQUIRE_ERROR(grpokit::host::pack_padded(mask, big, big), "more elements than an int64");
}

TEST_CASE("a finite logit whose scaled value overflows to -inf has p = 0: finite logp, entropy, dlogits",
          "[bad_input]") {
  // -FLT_MAX / 0.7 is -inf in float: the column contributes exactly nothing (p log p -> 0).
  batch_fixture f;
  f.logits[1] = -FLT_MAX;
  f.logits[2 * f.V + 4] = -FLT_MAX;
  grpokit::loss_config c;
  c.temperature = 0.7;
  c.entropy_coef = 0.1;
  using B = grpokit::policy<grpokit::precision<float, float>, grpokit::chunk<16>, grpokit::reduction::batch_invariant>;
  const auto r = f.fused(c);
  CHECK(std::isfinite(r.loss));
  CHECK(all_finite(f.dlogits));
  CHECK(f.dlogits[1] == 0.0f);
  const auto r2 = f.fused<B>(c);  // the online (batch-invariant) schedule as well
  CHECK(std::isfinite(r2.loss));
  CHECK(all_finite(f.dlogits));
  // the same as dropping the column: compare row 0 against logits with column 1 at a very low value
  std::vector<float> logp(6), ent(6), lse(6), logp2(6), ent2(6), lse2(6);
  grpokit::host::token_logprobs<F>(f.input(), c, {logp, ent, lse});
  f.logits[1] = -1e30f;  // scaled: -1.4e30, p = 0 in float as well
  f.logits[2 * f.V + 4] = -1e30f;
  grpokit::host::token_logprobs<F>(f.input(), c, {logp2, ent2, lse2});
  CHECK(logp == logp2);
  CHECK(ent == ent2);
  CHECK(lse == lse2);
}

TEST_CASE("logits of +-FLT_MAX in one row: differences overflow, results stay finite", "[bad_input]") {
  // z - max = -FLT_MAX - FLT_MAX = -inf: a weight of 0, never 0 * inf, on every schedule
  using B = grpokit::policy<grpokit::precision<float, float>, grpokit::chunk<16>, grpokit::reduction::batch_invariant>;
  batch_fixture f;
  for (std::int64_t t = 0; t < f.T; ++t) {
    f.logits[static_cast<std::size_t>(t * f.V + 2)] = FLT_MAX;
    f.logits[static_cast<std::size_t>(t * f.V + 6)] = -FLT_MAX;
    f.logits[static_cast<std::size_t>(t * f.V + 8)] = t % 2 ? -FLT_MAX : FLT_MAX;
  }
  grpokit::loss_config c;
  c.entropy_coef = 0.1;
  for (int k = 0; k < 2; ++k) {  // the vectorised and the online (batch-invariant) rows
    INFO("schedule " << k);
    const auto r = k == 0 ? f.fused<F>(c) : f.fused<B>(c);
    CHECK(std::isfinite(r.loss));
    CHECK(all_finite(f.dlogits));
    std::vector<float> logp(6), ent(6), lse(6);
    if (k == 0) grpokit::host::token_logprobs<F>(f.input(), c, {logp, ent, lse});
    if (k == 1) grpokit::host::token_logprobs<B>(f.input(), c, {logp, ent, lse});
    CHECK(all_finite(ent));
    CHECK(all_finite(lse));
    // one or two columns at FLT_MAX: p = 1/2 each (entropy log 2) or 1 (entropy 0)
    for (std::int64_t t = 0; t < f.T; ++t) CHECK(std::fabs(ent[t] - (t % 2 ? 0.0 : std::log(2.0))) < 1e-6);
  }
}

TEST_CASE("a row that overflows when scaled, or a temperature with no finite inverse, is an error", "[bad_input]") {
  batch_fixture f;
  grpokit::loss_config c;
  f.logits[3 * f.V] = FLT_MAX;  // scaled by 1/0.7: +inf
  c.temperature = 0.7;
  REQUIRE_ERROR(f.fused(c), "logits row 3 contains NaN or Inf, or overflows when scaled");
  using B = grpokit::policy<grpokit::precision<float, float>, grpokit::chunk<16>, grpokit::reduction::batch_invariant>;
  REQUIRE_ERROR(f.fused<B>(c), "logits row 3");
  batch_fixture g;
  for (std::int64_t v = 0; v < g.V; ++v) g.logits[static_cast<std::size_t>(g.V + v)] = -FLT_MAX;  // every column -inf
  REQUIRE_ERROR(g.fused(c), "logits row 1");
  batch_fixture h;
  grpokit::loss_config tiny;
  tiny.temperature = 1e-300;  // 0 as a float
  REQUIRE_ERROR(h.fused(tiny), "temperature must be > 0 with a finite inverse");
  std::vector<float> per_token(6, 1.0f);
  per_token[4] = 1e-39f;  // subnormal: 1 / t is inf in float
  std::vector<float> logp(6), ent(6), lse(6);
  REQUIRE_ERROR(grpokit::host::token_logprobs<F>(h.input(per_token), {}, {logp, ent, lse}), "temperature[4]");
}

TEST_CASE("every loss_config and advantage_config field is checked finite and in range", "[bad_input]") {
  batch_fixture f;
  auto with = [&](auto set, const char* message) {
    grpokit::loss_config c;
    set(c);
    INFO(message);
    REQUIRE_ERROR(f.fused(c), message);
  };
  with([](auto& c) { c.kl_coef = inf; }, "kl_coef must be finite");  // even with kl = none
  with([](auto& c) { c.dp_size = inf; }, "dp_size must be finite");
  with([](auto& c) { c.entropy_coef = qnan; }, "entropy_coef must be finite");
  with([](auto& c) { c.entropy_coef = inf; }, "entropy_coef must be finite");
  with([](auto& c) { c.trm_max_threshold = qnan; }, "TRM thresholds must be >= 0");
  with([](auto& c) { c.trm_mean_threshold = qnan; }, "TRM thresholds must be >= 0");
  with([](auto& c) { c.agg = static_cast<grpokit::aggregation>(99); }, "agg: unknown value 99");
  with([](auto& c) { c.obj = static_cast<grpokit::objective>(-1); }, "obj: unknown value");
  with([](auto& c) { c.kl = static_cast<grpokit::kl_estimator>(7); }, "kl: unknown value");
  with([](auto& c) { c.is = static_cast<grpokit::is_correction>(7); }, "is: unknown value");
  with([](auto& c) { c.trm_max_estimator = static_cast<grpokit::divergence>(3); }, "trm_max_estimator: unknown");
  with([](auto& c) { c.kl_input_clamp = qnan; }, "kl_input_clamp must be > 0");
  with([](auto& c) { c.kl_output_clamp = 0; }, "kl_output_clamp must be > 0");
  with([](auto& c) { c.gspo_log_ratio_max = qnan; }, "gspo_log_ratio_max must be > 0");
  with([](auto& c) { c.dual_clip = qnan; }, "dual_clip must be finite");
  with([](auto& c) { c.tau_pos = inf; }, "tau_pos must be finite");
  with([](auto& c) { c.tau_neg = 5e-324; }, "SAPO temperatures tau_pos, tau_neg must be in [1e-3, 1e3]");
  with([](auto& c) { c.global_tokens = inf; }, "global_tokens must be finite");
  with([](auto& c) { c.global_tokens = 1e-300; }, "global_tokens must be 0 (local count) or >= 1");
  with([](auto& c) { c.global_seqs = 0.5; }, "global_seqs must be 0 (local count) or >= 1");
  with([](auto& c) { c.norm_constant = inf; }, "norm_constant must be finite");
  with([](auto& c) { c.norm_constant = 5e-324; }, "norm_constant must be 0 (unset) or >= 1");
  with([](auto& c) { c.is_max = qnan; }, "is_min <= is_max");
  with([](auto& c) { c.importance_hi = qnan; }, "importance_lo <= importance_hi");
  with([](auto& c) { c.opsm_threshold = qnan; }, "opsm_threshold must not be NaN");
  with([](auto& c) { c.obj = static_cast<grpokit::objective>(8); }, "obj: unknown value 8");
  with([](auto& c) { c.clip_cov_ratio = 2; }, "clip_cov_ratio must be in [0, 1]");
  with([](auto& c) { c.clip_cov_lb = qnan; }, "need clip_cov_lb <= clip_cov_ub");
  with([](auto& c) { c.clip_cov_ub = 0.5; }, "need clip_cov_lb <= clip_cov_ub");
  with([](auto& c) { c.kl_cov_ratio = qnan; }, "kl_cov_ratio must be in [0, 1]");
  with([](auto& c) { c.kl_cov_ratio = -0.1; }, "kl_cov_ratio must be in [0, 1]");
  with([](auto& c) { c.ppo_kl_coef = inf; }, "ppo_kl_coef must be finite");
  with([](auto& c) { c.top_entropy_quantile = qnan; }, "top_entropy_quantile must be in [0, 1]");
  with([](auto& c) { c.dppo = static_cast<grpokit::dppo_divergence>(3); }, "dppo: unknown value 3");
  with([](auto& c) { c.dppo_low = -0.1; }, "dppo_low and dppo_high must be >= 0");
  with([](auto& c) { c.dppo_high = qnan; }, "dppo_low and dppo_high must be >= 0");
  {  // the DPPO mask's anchor: logp_old, else logp_rollout; neither is an error
    grpokit::loss_config c;
    c.dppo = grpokit::dppo_divergence::tv;
    batch_fixture g;
    g.logp_old.clear();
    CHECK(std::isfinite(g.fused(c).loss));
    g.logp_rollout.clear();
    REQUIRE_ERROR(g.fused(c), "dppo needs logp_old or logp_rollout");
  }
  with([](auto& c) { c.positive_nll_coef = -0.1; }, "positive_nll_coef must be finite and >= 0");
  with([](auto& c) { c.positive_nll_coef = inf; }, "positive_nll_coef must be finite and >= 0");
  {  // VAPO's NLL needs the positive flags, one per sequence; given without it they are checked too
    grpokit::loss_config c;
    c.positive_nll_coef = 0.1;
    batch_fixture g;
    REQUIRE_ERROR(g.fused(c), "positive_nll_coef != 0 needs batch.positive (2 flags), got 0");
    g.positive = {1, 0};
    CHECK(g.fused(c).metrics.loss_nll > 0);
    g.positive = {1};
    REQUIRE_ERROR(g.fused({}), "positive");
  }
  with([](auto& c) { c.adv.eps = inf; }, "adv.eps must be finite");
  with([](auto& c) { c.adv.std_floor = inf; }, "adv.std_floor must be finite");
  with([](auto& c) { c.adv.ess_ratio_ref = 0; }, "adv.ess_ratio_ref must be finite and > 0");
  with([](auto& c) { c.adv.ess_ratio_ref = qnan; }, "adv.ess_ratio_ref must be finite and > 0");
  with([](auto& c) { c.adv.scale = static_cast<grpokit::adv_scale>(5); }, "adv.scale: unknown value");
  with([](auto& c) { c.adv.clip_low = 0.5; }, "adv.clip_low must be <= 0 and adv.clip_high >= 0");
  with([](auto& c) { c.adv.clip_high = qnan; }, "adv.clip_low must be <= 0 and adv.clip_high >= 0");
  // +inf is "off" for clamps and thresholds, and a valid configuration
  grpokit::loss_config off;
  off.log_ratio_clamp = off.is_log_ratio_clamp = off.kl_input_clamp = inf;
  off.trm_max_threshold = inf;
  off.is_max = inf;
  CHECK(std::isfinite(f.fused(off).loss));
  // compute_advantages checks its config on its own
  std::vector<float> rewards{1, 0}, a(2);
  std::vector<std::int64_t> groups{0, 2};
  std::vector<std::uint8_t> keep(2);
  grpokit::advantage_config ac;
  ac.mad_eps = qnan;
  REQUIRE_ERROR((grpokit::host::compute_advantages<F>({rewards, groups, {}, {}}, ac, {a, keep})),
                "adv.mad_eps must be finite");
}

TEST_CASE("SAPO without a log-ratio clamp: finite loss and dlogits at huge ratios", "[bad_input]") {
  batch_fixture f;
  for (std::int64_t t = 0; t < f.T; ++t) f.logp_old[static_cast<std::size_t>(t)] = -800.0f;  // ratio e^~800: inf
  grpokit::loss_config c;
  c.obj = grpokit::objective::sapo;
  c.log_ratio_clamp = inf;  // TRL: no clamp
  const auto r = f.fused(c);
  CHECK(std::isfinite(r.loss));
  CHECK(all_finite(f.dlogits));
}

TEST_CASE("logits_backward on its own reports NaN logits under check_finite", "[bad_input]") {
  for (bool vectorised : {true, false}) {
    batch_fixture f;
    f.logits[2 * f.V + 3] = static_cast<float>(qnan);
    std::vector<float> lse(6, 2.0f), ent(6, 1.0f), g(6, 0.5f), ge(6, 0.0f);
    const grpokit::backward_inputs<float> in{lse, ent, g, ge};
    if (vectorised) {
      REQUIRE_ERROR(grpokit::host::logits_backward<F>(f.input(), in, {}, {f.dlogits.data(), f.T, f.V, f.V}),
                    "logits row 2 contains NaN or Inf");
    } else {
      using B = grpokit::policy<grpokit::precision<float, float>, grpokit::reduction::batch_invariant>;
      REQUIRE_ERROR(grpokit::host::logits_backward<B>(f.input(), in, {}, {f.dlogits.data(), f.T, f.V, f.V}),
                    "logits row 2 contains NaN or Inf");
    }
    grpokit::loss_config off;
    off.check_finite = false;  // documented: propagates
    grpokit::host::logits_backward<F>(f.input(), in, off, {f.dlogits.data(), f.T, f.V, f.V});
    CHECK(std::isnan(f.dlogits[2 * f.V + 3]));
  }
}

TEST_CASE("outputs aliasing inputs are rejected; interleaved disjoint rows are not", "[bad_input]") {
  // policy_loss: dlogp over logp
  std::vector<double> logp{-1, -2, -0.5}, ent{1, 1, 1}, dent(3), adv{1};
  std::vector<std::int64_t> off{0, 3};
  grpokit::rollout_batch<double> b;
  b.seq_offsets = off;
  b.adv = adv;
  REQUIRE_ERROR((grpokit::host::policy_loss<D>({logp, ent}, b, {}, {logp, dent})), "dlogp / dentropy overlap an input");
  // logits_backward: two [T, V] matrices interleaved in one [T, 2V] buffer are disjoint
  batch_fixture f;
  const std::int64_t T = f.T, V = f.V;
  std::vector<float> both(static_cast<std::size_t>(T * 2 * V));
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t v = 0; v < V; ++v)
      both[static_cast<std::size_t>(t * 2 * V + v)] = f.logits[static_cast<std::size_t>(t * V + v)];
  std::vector<float> lse(6), ent6(6), logp6(6), g(6, 0.3f), ge(6, 0.1f);
  grpokit::host::token_logprobs<F>(f.input(), {}, {logp6, ent6, lse});
  const grpokit::logits_input<float, float> in{{both.data(), T, V, 2 * V}, f.targets, {}};
  const grpokit::backward_inputs<float> bi{lse, ent6, g, ge};
  grpokit::host::logits_backward<F>(in, bi, {}, {both.data() + V, T, V, 2 * V});  // no error
  std::vector<float> want(static_cast<std::size_t>(T * V));
  grpokit::host::logits_backward<F>(f.input(), bi, {}, {want.data(), T, V, V});
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t v = 0; v < V; ++v)
      CHECK(both[static_cast<std::size_t>(t * 2 * V + V + v)] == want[static_cast<std::size_t>(t * V + v)]);
  // shifted by one column: overlaps
  REQUIRE_ERROR((grpokit::host::logits_backward<F>(in, bi, {}, {both.data() + V - 1, T, V, 2 * V})),
                "dlogits overlaps the logits");
  // fused_linear_loss: dhidden over hidden
  const std::int64_t Dm = 4;
  std::vector<float> hidden(static_cast<std::size_t>(T * Dm), 0.1f), weight(static_cast<std::size_t>(V * Dm), 0.2f),
      dweight(weight.size());
  grpokit::linear_grads<float, float> lg;
  lg.dhidden = {hidden.data(), T, Dm, Dm};
  lg.dweight_acc = {dweight.data(), V, Dm, Dm};
  REQUIRE_ERROR((grpokit::host::fused_linear_loss<F>(
                    {{hidden.data(), T, Dm, Dm}, {weight.data(), V, Dm, Dm}, {}, f.targets, {}}, f.batch(), {}, 4, lg)),
                "dhidden / dweight / dbias overlap");
}

TEST_CASE("fused_loss validates before it allocates", "[bad_input]") {
  batch_fixture f;
  const std::int64_t huge = std::int64_t{1} << 61;
  // a [2^61, 9] logits view: its size overflows, reported before any scratch is allocated
  REQUIRE_ERROR((grpokit::host::fused_loss<F>({{f.logits.data(), huge, f.V, f.V}, f.targets, {}}, f.batch(), {},
                                              {f.dlogits.data(), huge, f.V, f.V})),
                "larger than any memory");
}

TEST_CASE("a NaN in fused_linear_loss's hidden states names hidden and the token", "[bad_input]") {
  batch_fixture f;
  const std::int64_t T = f.T, V = f.V, Dm = 3;
  std::vector<float> hidden(static_cast<std::size_t>(T * Dm), 0.1f), weight(static_cast<std::size_t>(V * Dm), 0.2f),
      dhidden(hidden.size()), dweight(weight.size());
  hidden[static_cast<std::size_t>(5 * Dm + 1)] = static_cast<float>(qnan);  // token 5: chunk 1, row 1 with chunk 4
  grpokit::linear_grads<float, float> lg;
  lg.dhidden = {dhidden.data(), T, Dm, Dm};
  lg.dweight_acc = {dweight.data(), V, Dm, Dm};
  const grpokit::linear_input<float, float> in{
      {hidden.data(), T, Dm, Dm}, {weight.data(), V, Dm, Dm}, {}, f.targets, {}};
  REQUIRE_ERROR((grpokit::host::fused_linear_loss<F>(in, f.batch(), {}, 4, lg)), "hidden row 5 (token 5)");
  hidden[static_cast<std::size_t>(5 * Dm + 1)] = 0.1f;
  weight[static_cast<std::size_t>(7 * Dm)] = static_cast<float>(inf);
  REQUIRE_ERROR((grpokit::host::fused_linear_loss<F>(in, f.batch(), {}, 4, lg)), "weight row 7");
}

TEST_CASE("rewards of +-1e300: the group spread does not overflow, advantages are +-1", "[bad_input]") {
  std::vector<double> r{1e300, -1e300, 1e300, -1e300}, a(4);
  std::vector<std::int64_t> groups{0, 4};
  std::vector<std::uint8_t> keep(4);
  for (auto scale : {grpokit::adv_scale::group, grpokit::adv_scale::batch}) {
    grpokit::advantage_config ac;
    ac.scale = scale;
    grpokit::host::compute_advantages<D>({r, groups, {}, {}}, ac, {a, keep});
    // mean 0, Bessel std sqrt(4e600 / 3): A = r / std = +-sqrt(3) / 2 (eps is negligible)
    const long double mean = 0, sd = std::sqrt((4 * 1e300L * 1e300L) / 3);
    for (int i = 0; i < 4; ++i) CHECK(std::fabs(a[i] - static_cast<double>((r[i] - mean) / sd)) < 1e-12);
  }
  // and the moments are the unscaled formula's bit for bit for ordinary rewards (a largest |r| of
  // 100.3: scaled by 2^-6, which must be exact), summed in serial_ops' documented order (item i
  // into running sum i mod 4, then (s0 + s1) + (s2 + s3))
  const std::vector<double> small{3.5, 12.25, 0.1, 7.0, 100.3};
  auto four_sums = [&](auto term) {
    double lane[4] = {0, 0, 0, 0};
    for (std::size_t i = 0; i < small.size(); ++i) lane[i % 4] += term(small[i]);
    return (lane[0] + lane[1]) + (lane[2] + lane[3]);
  };
  const double mu = four_sums([](double v) { return v; }) / 5;
  const double ss = four_sums([&](double v) { return (v - mu) * (v - mu); });
  CHECK(grpokit::detail::group_mean(small.data(), 5) == mu);
  CHECK(grpokit::detail::group_std(small.data(), 5) == std::sqrt(ss / 4));
}

TEST_CASE("approx_kl_old is verl's ppo_kl: the mean of the clamped log-ratio", "[bad_input]") {
  std::vector<double> logp{-1.0, -2.0}, old{-40.0, -2.5}, adv{1}, dlogp(2);
  std::vector<std::int64_t> off{0, 2};
  grpokit::rollout_batch<double> b;
  b.seq_offsets = off;
  b.adv = adv;
  b.logp_old = old;
  grpokit::loss_config c;  // log_ratio_clamp = 20: -(clamp(39, 20) + clamp(0.5, 20)) / 2
  const auto r = grpokit::host::policy_loss<D>({logp, {}}, b, c, {dlogp, {}});
  CHECK(support::close(r.metrics.approx_kl_old, -(20.0 + 0.5) / 2, 1e-12, 1e-12));
}
