// token_logprobs against the long-double reference: awkward V and T, chunk sizes that do and do
// not divide V, temperatures, vocabulary pruning, every storage type.
#include <cmath>
#include <random>

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

TEST_CASE("token_logprobs matches the reference over awkward shapes", "[token_logprobs]") {
  using f32 = grpokit::precision<float, float>;
  using f64 = grpokit::precision<double, double>;
  std::uint64_t seed = 1;
  for (std::int64_t V : {1, 2, 7, 33, 257, 4097}) {
    for (auto lengths : {std::vector<std::int64_t>{1}, std::vector<std::int64_t>{3, 0, 5}, std::vector<std::int64_t>{13}}) {
      for (bool per_token : {false, true}) {
        ++seed;
        check_rows<plain<f64, grpokit::reduction::deterministic, 16>>(seed, lengths, V, per_token, 0.7, 1e-12);
        check_rows<plain<f64, grpokit::reduction::batch_invariant, 16>>(seed, lengths, V, per_token, 1.0, 1e-12);
        check_rows<plain<f64, grpokit::reduction::fast, 4096>>(seed, lengths, V, per_token, 1.3, 1e-12);
        check_rows<plain<f32, grpokit::reduction::deterministic, 1>>(seed, lengths, V, per_token, 1.0, 2e-5);
        check_rows<plain<f32, grpokit::reduction::fast, 4096>>(seed, lengths, V, per_token, 0.6, 2e-5);
        check_rows<plain<f32, grpokit::reduction::batch_invariant, 64>>(seed, lengths, V, per_token, 0.9, 2e-5);
        check_rows<plain<grpokit::precision<float, double>, grpokit::reduction::batch_invariant, 4096>>(
            seed, lengths, V, per_token, 1.0, 1e-12);
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
