// The sum_p2 output of fused_loss, fused_linear_loss and token_logprobs (sum_v p_v^2 per token)
// against the long-double reference: awkward V (the policy's edges), temperatures, vocabulary
// pruning, every storage type; asking for it changes no other output; fused_linear_loss and
// token_logprobs give fused_loss's value.
#include <cmath>
#include <random>
#include <tuple>

#include "catch.hpp"
#include "support.hpp"

namespace {

template <class P>
struct sum_p2_run {
  support::host_run<P> h;
  std::vector<typename P::accum_type> sum_p2;
};

template <class P>
sum_p2_run<P> run_with_sum_p2(const ref::problem& p, const grpokit::loss_config& cfg,
                              grpokit::backward_mode mode = grpokit::backward_mode::separate) {
  using S = typename P::storage_type;
  sum_p2_run<P> r;
  auto& h = r.h;
  h.logits = support::to_storage<S>(p.logits);
  support::load_batch(h, p);
  h.logp.resize(static_cast<std::size_t>(p.T));
  h.entropy.resize(static_cast<std::size_t>(p.T));
  r.sum_p2.assign(static_cast<std::size_t>(p.T), -1);
  h.dlogits.resize(h.logits.size());
  const bool in_place = mode == grpokit::backward_mode::in_place;  // dlogits written over the logits
  S* out = in_place ? h.logits.data() : h.dlogits.data();
  const auto in = h.input(p);
  h.result = grpokit::host::fused_loss<P>(in, h.batch(p), cfg, {out, p.T, p.V, p.V}, {h.logp, h.entropy, r.sum_p2},
                                          mode);
  if (in_place) h.dlogits = h.logits;
  return r;
}

template <class P>
void check_sum_p2(std::uint64_t seed, std::int64_t V, bool per_token_temp, double tol) {
  using S = typename P::storage_type;
  using R = typename P::accum_type;
  std::mt19937_64 rng(seed);
  ref::problem p = ref::make_problem(rng, {3, 1, 4}, V, 3.0);
  support::round_logits<S>(p);
  grpokit::loss_config cfg = grpokit::presets::grpo::config();
  cfg.temperature = 0.7;
  cfg.prune_rho = 0.02;
  cfg.entropy_coef = 0.01;
  if (per_token_temp) {
    std::uniform_real_distribution<double> u(0.3, 2.0);
    for (std::int64_t t = 0; t < p.T; ++t) p.temperature.push_back(static_cast<double>(static_cast<R>(u(rng))));
  }
  std::vector<ref::ld> logp, ent;
  support::ref_rows(p, std::vector<ref::ld>(p.logits.begin(), p.logits.end()), cfg, P::vocab_prune, logp, ent);
  ref::add_policies(rng, p, logp, 0.2);
  const auto got = run_with_sum_p2<P>(p, cfg);
  const auto plain = support::run_fused<P>(p, cfg);
  for (std::int64_t t = 0; t < p.T; ++t) {
    const auto want = ref::row(ref::row_of(p, t), p.targets[t], ref::temperature_of(p, t, cfg), P::vocab_prune,
                               cfg.prune_rho);
    INFO("t = " << t << " V = " << V << " seed " << seed);
    CHECK(support::close(got.sum_p2[t], static_cast<double>(want.sum_p2), tol, tol));
    CHECK(got.sum_p2[t] <= R(1) + R(tol));
  }
  // asking for sum_p2 changes nothing else
  CHECK(std::memcmp(&got.h.result, &plain.result, sizeof(grpokit::loss_result)) == 0);
  CHECK(support::same_bits(got.h.dlogits, plain.dlogits));
  CHECK(support::same_bits(got.h.logp, plain.logp));
  // nor does an in-place backward change sum_p2
  const auto in_place = run_with_sum_p2<P>(p, cfg, grpokit::backward_mode::in_place);
  CHECK(support::same_bits(in_place.sum_p2, got.sum_p2));
  CHECK(support::same_bits(in_place.h.dlogits, plain.dlogits));
  // token_logprobs gives the same bits (the old policy's forward, where the optimal token baseline takes them)
  std::vector<R> lp(static_cast<std::size_t>(p.T)), en(lp.size()), lse(lp.size()), sp(lp.size(), R(-1));
  grpokit::host::token_logprobs<P>(got.h.input(p), cfg, {lp, en, lse, sp});
  CHECK(support::same_bits(sp, got.sum_p2));
  CHECK(support::same_bits(lp, got.h.logp));
}

template <class Precision, class Reduction, std::int64_t N>
using plain = grpokit::policy<Precision, Reduction, grpokit::chunk<N>>;
template <class Precision, class Reduction, std::int64_t N>
using pruned = grpokit::policy<Precision, Reduction, grpokit::chunk<N>, grpokit::mask::vocab_prune>;
using f32 = grpokit::precision<float, float>;
using f64 = grpokit::precision<double, double>;

}  // namespace

using sum_p2_policies =
    std::tuple<plain<f64, grpokit::reduction::batch_invariant, 16>, plain<f64, grpokit::reduction::fast, 64>,
               plain<f32, grpokit::reduction::deterministic, 32>, plain<f32, grpokit::reduction::fast, 4096>,
               pruned<f32, grpokit::reduction::fast, 32>, pruned<f64, grpokit::reduction::batch_invariant, 8>,
               plain<grpokit::precision<__nv_bfloat16, float>, grpokit::reduction::batch_invariant, 64>>;

TEMPLATE_LIST_TEST_CASE("fused_loss sum_p2 matches the long-double reference", "[sum_p2]", sum_p2_policies) {
  using R = typename TestType::accum_type;
  const double tol = std::is_same<R, double>::value ? 1e-12 : 2e-5;
  std::uint64_t seed = 40;
  auto sizes = support::awkward_vocab_sizes<TestType>();
  sizes.push_back(2 * grpokit::detail::sum_p2_lanes + 3);  // several columns per lane
  for (const std::int64_t V : sizes)
    for (const bool per_token : {false, true}) check_sum_p2<TestType>(++seed, V, per_token, tol);
}

TEST_CASE("sum_p2 is 1 for a one-hot row and 1 / V for a flat one", "[sum_p2]") {
  using P = plain<f64, grpokit::reduction::batch_invariant, 16>;
  std::mt19937_64 rng(7);
  ref::problem p = ref::make_problem(rng, {2}, 301, 1.0, false);
  for (std::int64_t v = 0; v < p.V; ++v) {
    p.logits[static_cast<std::size_t>(v)] = v == 5 ? 1e4 : 0.0;  // row 0: every mass on column 5
    p.logits[static_cast<std::size_t>(p.V + v)] = 0.25;        // row 1: uniform
  }
  p.b.logp_old = p.b.logp_ref = p.b.logp_rollout = {-1, -1};
  const auto r = run_with_sum_p2<P>(p, grpokit::presets::grpo::config());
  CHECK(r.sum_p2[0] == 1.0);
  CHECK(support::close(r.sum_p2[1], 1.0 / 301, 1e-14, 0));
}

TEST_CASE("fused_linear_loss sum_p2 equals fused_loss's on the same logits, for every token chunk", "[sum_p2][linear]") {
  using P = grpokit::policy<grpokit::precision<double, double>, grpokit::chunk<16>, grpokit::mask::vocab_prune>;
  std::mt19937_64 rng(11);
  const std::int64_t T = 9, V = 41, D = 5;
  std::normal_distribution<double> n(0, 1.0);
  std::vector<double> hidden(T * D), weight(V * D), logits(T * V);
  for (auto& x : hidden) x = 2 * n(rng);
  for (auto& x : weight) x = n(rng);
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t v = 0; v < V; ++v) {
      ref::ld acc = 0;
      for (std::int64_t d = 0; d < D; ++d) acc += ref::ld(hidden[t * D + d]) * weight[v * D + d];
      logits[t * V + v] = static_cast<double>(acc);
    }
  std::vector<std::int64_t> targets(T), offsets{0, 4, 9};
  for (auto& y : targets) y = std::uniform_int_distribution<std::int64_t>(0, V - 1)(rng);
  std::vector<double> adv{0.5, -1}, old(T, -2.0), none;
  grpokit::loss_config cfg = grpokit::presets::grpo::config();
  cfg.kl = grpokit::kl_estimator::none;
  cfg.prune_rho = 0.05;
  grpokit::rollout_batch<double> batch;
  batch.seq_offsets = offsets;
  batch.adv = adv;
  batch.logp_old = old;
  std::vector<double> want(T), dlogits(T * V);
  grpokit::host::fused_loss<P>({{logits.data(), T, V, V}, targets, {}}, batch, cfg, {dlogits.data(), T, V, V},
                               {{}, {}, want});
  for (const std::int64_t chunk : {1, 4, 9, 100}) {
    std::vector<double> got(T, -1), dweight(V * D);
    grpokit::linear_grads<double, double> g;
    g.dweight = {dweight.data(), V, D, D};
    grpokit::host::fused_linear_loss<P>({{hidden.data(), T, D, D}, {weight.data(), V, D, D}, {}, targets, {}}, batch,
                                        cfg, chunk, g, {{}, {}, got});
    INFO("token chunk " << chunk);
    for (std::int64_t t = 0; t < T; ++t) CHECK(support::close(got[t], want[t], 1e-13, 1e-15));
  }
  std::vector<double> wrong(T - 1), dweight(V * D);
  grpokit::linear_grads<double, double> g;
  g.dweight = {dweight.data(), V, D, D};
  REQUIRE_ERROR((grpokit::host::fused_linear_loss<P>({{hidden.data(), T, D, D}, {weight.data(), V, D, D}, {}, targets, {}},
                                                     batch, cfg, 4, g, {{}, {}, wrong})),
                "sum_p2 output: expected 9 elements (or none), got 8");
}
