// token_logprobs against the long-double reference: awkward V and T, chunk sizes that do and do
// not divide V, temperatures, vocabulary pruning, every storage type.
#include <cmath>
#include <random>
#include <tuple>
#include <type_traits>

#include "catch.hpp"
#include "support.hpp"

namespace {

template <class P>
void check_rows(std::uint64_t seed, std::vector<std::int64_t> lengths, std::int64_t V, bool per_token_temp,
                double temp, double tol) {
  using S = typename P::storage_type;
  using R = typename P::accum_type;
  std::mt19937_64 rng(seed);
  ref::problem p = ref::make_problem(rng, lengths, V, 3.0, false);
  support::round_logits<S>(p);
  grpokit::loss_config cfg;
  cfg.temperature = temp;
  cfg.prune_rho = 0.02;
  if (per_token_temp) {
    std::uniform_real_distribution<double> u(0.3, 2.0);
    for (std::int64_t t = 0; t < p.T; ++t) p.temperature.push_back(static_cast<double>(static_cast<R>(u(rng))));
  }
  const auto logits = support::to_storage<S>(p.logits);
  const auto temps = support::cast<R>(p.temperature);
  std::vector<R> logp(p.T), ent(p.T), lse(p.T);
  grpokit::host::token_logprobs<P>({{logits.data(), p.T, V, V}, p.targets, temps}, cfg, {logp, ent, lse});
  for (std::int64_t t = 0; t < p.T; ++t) {
    const auto want = ref::row(ref::row_of(p, t), p.targets[t], ref::temperature_of(p, t, cfg), P::vocab_prune,
                               cfg.prune_rho);
    INFO("t = " << t << " V = " << V << " seed " << seed);
    CHECK(support::close(lse[t], static_cast<double>(want.lse), tol, tol));
    CHECK(support::close(ent[t], static_cast<double>(want.entropy), tol, tol));
    if (want.logp == -ref::inf) {
      CHECK(logp[t] == -std::numeric_limits<R>::infinity());
    } else {
      CHECK(support::close(logp[t], static_cast<double>(want.logp), tol, tol));
    }
  }
}

template <class Precision, class Reduction, std::int64_t N>
using plain = grpokit::policy<Precision, Reduction, grpokit::chunk<N>>;
template <class Precision, class Reduction, std::int64_t N>
using pruned = grpokit::policy<Precision, Reduction, grpokit::chunk<N>, grpokit::mask::vocab_prune>;

}  // namespace

using f32 = grpokit::precision<float, float>;
using f64 = grpokit::precision<double, double>;
using token_logprobs_policies =
    std::tuple<plain<f64, grpokit::reduction::deterministic, 16>, plain<f64, grpokit::reduction::batch_invariant, 16>,
               plain<f64, grpokit::reduction::fast, 4096>, plain<f32, grpokit::reduction::deterministic, 1>,
               plain<f32, grpokit::reduction::fast, 4096>, plain<f32, grpokit::reduction::batch_invariant, 64>,
               plain<grpokit::precision<float, double>, grpokit::reduction::batch_invariant, 4096>,
               pruned<f32, grpokit::reduction::deterministic, 32>, pruned<f64, grpokit::reduction::batch_invariant, 8>>;

TEMPLATE_LIST_TEST_CASE("token_logprobs matches the reference over awkward shapes", "[token_logprobs]",
                        token_logprobs_policies) {
  using P = TestType;
  INFO(support::describe<P>());
  const double tol = std::is_same<typename P::accum_type, double>::value ? 1e-12 : 2e-5;
  std::uint64_t seed = 1;
  for (std::int64_t V : support::awkward_vocab_sizes<P>()) {
    for (auto lengths : {std::vector<std::int64_t>{1}, std::vector<std::int64_t>{3, 0, 5}, std::vector<std::int64_t>{13}}) {
      for (bool per_token : {false, true}) {
        ++seed;
        check_rows<P>(seed, lengths, V, per_token, seed % 3 == 0 ? 0.7 : seed % 3 == 1 ? 1.0 : 1.3, tol);
      }
    }
  }
}

TEST_CASE("vocabulary pruning renormalises over the safe set and masks pruned targets", "[token_logprobs][prune]") {
  using f64 = grpokit::precision<double, double>;
  std::uint64_t seed = 100;
  for (std::int64_t V : {1, 7, 33, 4097}) {
    for (bool per_token : {false, true}) {
      ++seed;
      check_rows<pruned<f64, grpokit::reduction::deterministic, 16>>(seed, {4, 9}, V, per_token, 1.0, 1e-12);
      check_rows<pruned<f64, grpokit::reduction::batch_invariant, 32>>(seed, {4, 9}, V, per_token, 0.8, 1e-12);
      check_rows<pruned<grpokit::precision<float, float>, grpokit::reduction::batch_invariant, 4096>>(
          seed, {4, 9}, V, per_token, 1.0, 2e-5);
      // fp32 fast / deterministic: the host's vectorised two-pass rows (host/rows.hpp)
      check_rows<pruned<grpokit::precision<float, float>, grpokit::reduction::deterministic, 16>>(
          seed, {4, 9}, V, per_token, 1.0, 2e-5);
      check_rows<pruned<grpokit::precision<float, float>, grpokit::reduction::fast, 64>>(seed, {4, 9}, V, per_token,
                                                                                          0.7, 2e-5);
    }
  }
}

#if defined(GRPOKIT_HAS_CUDA_HALF)
TEST_CASE("16-bit storage is read exactly and accumulated in fp32", "[token_logprobs][half]") {
  std::uint64_t seed = 200;
  for (std::int64_t V : {7, 1000, 4097}) {
    ++seed;
    check_rows<plain<grpokit::precision<__nv_bfloat16, float>, grpokit::reduction::batch_invariant, 256>>(
        seed, {5, 2}, V, false, 1.0, 2e-5);
    check_rows<plain<grpokit::precision<__half, float>, grpokit::reduction::deterministic, 128>>(seed, {5, 2}, V,
                                                                                                   true, 1.0, 2e-5);
  }
}
#endif

TEST_CASE("a large common logit offset does not lose precision", "[token_logprobs]") {
  using P = grpokit::policy<grpokit::precision<float, float>, grpokit::chunk<16>>;
  std::mt19937_64 rng(5);
  ref::problem p = ref::make_problem(rng, {6}, 100, 1.0, false);
  for (auto& x : p.logits) x = static_cast<float>(x + 1e4);  // CCE / PyTorch #195829: offset logits
  std::vector<float> logits = support::to_storage<float>(p.logits);
  std::vector<float> logp(p.T), ent(p.T), lse(p.T);
  grpokit::host::token_logprobs<P>({{logits.data(), p.T, p.V, p.V}, p.targets, {}}, {}, {logp, ent, lse});
  for (std::int64_t t = 0; t < p.T; ++t) {
    const auto want = ref::row(ref::row_of(p, t), p.targets[t], 1, false, 1);
    CHECK(std::fabs(logp[t] - static_cast<double>(want.logp)) < 2e-3);  // fp32 ulp of 1e4 is 1e-3
    CHECK(std::fabs(ent[t] - static_cast<double>(want.entropy)) < 1e-4);
  }
}

TEST_CASE("with check_finite off, a NaN logit makes its row's lse NaN in every order", "[token_logprobs]") {
  auto nan_row = [](auto policy_tag) {
    using P = decltype(policy_tag);
    std::vector<float> logits(3 * 37, 0.5f);
    logits[37 + 20] = std::numeric_limits<float>::quiet_NaN();
    std::vector<std::int64_t> targets{1, 2, 3};
    std::vector<float> logp(3), ent(3), lse(3);
    grpokit::loss_config cfg;
    cfg.check_finite = false;
    grpokit::host::token_logprobs<P>({{logits.data(), 3, 37, 37}, targets, {}}, cfg, {logp, ent, lse});
    CHECK(std::isfinite(lse[0]));
    CHECK(std::isnan(lse[1]));
    CHECK(std::isfinite(lse[2]));
  };
  nan_row(grpokit::policy<grpokit::reduction::fast>{});
  nan_row(grpokit::policy<grpokit::reduction::deterministic>{});
  nan_row(grpokit::policy<grpokit::reduction::batch_invariant>{});
}

namespace {
using f32_det_pruned = grpokit::policy<grpokit::precision<float, float>, grpokit::reduction::deterministic,
                                       grpokit::mask::vocab_prune>;
using f32_bi_pruned = grpokit::policy<grpokit::precision<float, float>, grpokit::reduction::batch_invariant,
                                      grpokit::mask::vocab_prune>;

template <class P>
std::vector<float> dlogits_of(std::vector<float> logits, std::int64_t V, std::vector<std::int64_t> targets,
                              std::vector<float> lse, std::vector<float> ent, const grpokit::loss_config& cfg) {
  const auto T = static_cast<std::int64_t>(targets.size());
  std::vector<float> dlogp(targets.size(), 0.7f), dent(targets.size(), -0.3f), out(logits.size());
  grpokit::host::logits_backward<P>({{logits.data(), T, V, V}, targets, {}}, {lse, ent, dlogp, dent}, cfg,
                                    {out.data(), T, V, V});
  return out;
}
}  // namespace

TEST_CASE("a zero pruning threshold keeps the zero logits of either sign (rho = 1)", "[token_logprobs][prune]") {
  // rho = 1 puts the threshold at the row max: only the columns equal to the max stay.
  const std::vector<float> logits{-0.f, -1.f, -0.f, 0.f, -3.f,   // max +0: three zeros stay
                                  -0.f, -2.f, -0.f, -5.f, -0.f};  // max -0: three zeros stay
  const std::vector<std::int64_t> targets{0, 2};
  grpokit::loss_config cfg;
  cfg.prune_rho = 1.0;
  auto check = [&](auto policy_tag) {
    using P = decltype(policy_tag);
    std::vector<float> x = logits, logp(2), ent(2), lse(2);
    grpokit::host::token_logprobs<P>({{x.data(), 2, 5, 5}, targets, {}}, cfg, {logp, ent, lse});
    for (int t = 0; t < 2; ++t) {
      const auto want = ref::row(std::vector<ref::ld>(logits.begin() + 5 * t, logits.begin() + 5 * t + 5), targets[t],
                                 1, true, 1);
      INFO("row " << t);
      CHECK(support::close(lse[t], static_cast<double>(want.lse), 1e-6, 1e-6));
      CHECK(support::close(ent[t], static_cast<double>(want.entropy), 1e-6, 1e-6));
      CHECK(support::close(logp[t], static_cast<double>(want.logp), 1e-6, 1e-6));
    }
    return dlogits_of<P>(logits, 5, targets, lse, ent, cfg);
  };
  const auto fast = check(f32_det_pruned{});
  const auto online = check(f32_bi_pruned{});
  for (std::size_t i = 0; i < fast.size(); ++i) CHECK(std::fabs(fast[i] - online[i]) <= 1e-6f);
}

TEST_CASE("a pruned row with a NaN gets the same dlogits from the vectorised and the online rows",
          "[token_logprobs][prune]") {
  const std::vector<float> logits{1.f, std::numeric_limits<float>::quiet_NaN(), 0.5f, -3.f, 0.25f, 0.f, -1.f};
  grpokit::loss_config cfg;
  cfg.check_finite = false;
  cfg.prune_rho = 1e-3;
  const std::vector<float> lse{1.7f}, ent{1.1f};  // finite, as a caller may pass
  const auto fast = dlogits_of<f32_det_pruned>(logits, 7, {2}, lse, ent, cfg);
  const auto online = dlogits_of<f32_bi_pruned>(logits, 7, {2}, lse, ent, cfg);
  for (std::size_t i = 0; i < fast.size(); ++i) {
    INFO("column " << i << ": " << fast[i] << " vs " << online[i]);
    CHECK((std::isnan(fast[i]) == std::isnan(online[i])));
    if (!std::isnan(online[i])) CHECK(std::fabs(fast[i] - online[i]) <= 1e-6f);
  }
}

TEST_CASE("fp32 rows of a 151936-token vocabulary keep fp32 accuracy", "[token_logprobs]") {
  std::mt19937_64 rng(77);
  const std::int64_t V = 151936;
  ref::problem p = ref::make_problem(rng, {3}, V, 4.0, false);
  const auto logits = support::to_storage<float>(p.logits);
  auto check = [&](auto policy_tag) {
    using P = decltype(policy_tag);
    std::vector<float> logp(p.T), ent(p.T), lse(p.T);
    grpokit::host::token_logprobs<P>({{logits.data(), p.T, V, V}, p.targets, {}}, {}, {logp, ent, lse});
    for (std::int64_t t = 0; t < p.T; ++t) {
      const auto want = ref::row(ref::row_of(p, t), p.targets[t], 1, false, 1);
      INFO("t = " << t);
      CHECK(std::fabs(lse[t] - static_cast<double>(want.lse)) <= 4e-6 * std::fabs(static_cast<double>(want.lse)));
      CHECK(std::fabs(ent[t] - static_cast<double>(want.entropy)) <= 4e-6 * std::fabs(static_cast<double>(want.entropy)));
    }
  };
  check(grpokit::policy<grpokit::precision<float, float>, grpokit::reduction::deterministic>{});
  check(grpokit::policy<grpokit::precision<float, float>, grpokit::reduction::batch_invariant>{});
}
