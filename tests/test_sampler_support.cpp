// The sampler's support threshold (detail/sampler_support.hpp) against vLLM's apply_top_k_top_p
// written out in long double (sort ascending, the k-th largest as cutoff, softmax over the rest,
// cumulative sums, drop while <= 1 - p, the largest kept), on random rows of float and double z
// (no ties: vLLM splits ties by its sort), and by hand: ties kept together, p -> 0, k = 1, off.
#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <grpokit/grpokit.hpp>
#include <grpokit/host/distributed.hpp>
#include <grpokit/host/detail/sampler_support.hpp>
#include <grpokit/math/ops.hpp>

#include "catch.hpp"

namespace {

using ld = long double;
using Ops = grpokit::math::invariant_ops;

// vLLM 0.10 (_apply_top_k_top_p): the smallest z kept; also whether a kept or dropped token's
// cumulative sum lies within a margin of 1 - p that grpokit's masses may decide otherwise: Acc's exp
// (float: ~1e-7 relative) and the 2^-40 fixed point (~1e-9 over 4099 columns).
template <class Acc>
ld vllm_threshold(const std::vector<Acc>& z, std::int64_t k, ld p, bool& near_boundary) {
  std::vector<ld> s(z.begin(), z.end());
  std::sort(s.begin(), s.end());
  const std::size_t n = s.size();
  std::vector<bool> dropped(n, false);
  if (k > 0 && static_cast<std::size_t>(k) < n) {
    const ld cutoff = s[n - static_cast<std::size_t>(k)];
    for (std::size_t i = 0; i < n; ++i) dropped[i] = s[i] < cutoff;
  }
  near_boundary = false;
  if (p < 1) {
    ld total = 0;
    for (std::size_t i = 0; i < n; ++i)
      if (!dropped[i]) total += std::exp(s[i] - s[n - 1]);
    ld cum = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (dropped[i]) continue;
      cum += std::exp(s[i] - s[n - 1]) / total;
      if (std::fabs(cum - (1 - p)) < (sizeof(Acc) == 4 ? 2e-6L : 1e-8L)) near_boundary = true;
      if (i + 1 < n && cum <= 1 - p) dropped[i] = true;
    }
  }
  for (std::size_t i = 0; i < n; ++i)
    if (!dropped[i]) return s[i];
  return s[n - 1];
}

template <class Acc>
void random_rows(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> g(0, 1);
  int checked = 0;
  for (int rep = 0; rep < 80; ++rep) {
    const std::int64_t n = std::vector<std::int64_t>{1, 2, 7, 97, 256, 1000, 4099}[rep % 7];
    const double scale = rep % 3 == 0 ? 8.0 : 1.5;  // peaked and flat rows
    std::vector<Acc> z(static_cast<std::size_t>(n));
    for (auto& v : z) v = static_cast<Acc>(scale * g(rng));
    std::sort(z.begin(), z.end());
    if (std::adjacent_find(z.begin(), z.end()) != z.end()) continue;  // ties: by hand below
    std::shuffle(z.begin(), z.end(), rng);
    const std::int64_t k = std::vector<std::int64_t>{0, 1, 5, 50, n, n + 3}[(rep / 7) % 6];
    const double p = std::vector<double>{1.0, 0.9, 0.5, 0.99, 1e-6, 0.3}[(rep / 2) % 6];
    bool near = false;
    const ld want = vllm_threshold(z, k, p, near);
    if (near) continue;
    const Acc got = grpokit::detail::sampler_threshold<Ops, Acc>(z.data(), n, Acc(1), k, p);
    INFO("rep " << rep << ", n " << n << ", k " << k << ", p " << p);
    if (k <= 0 && p >= 1) {
      CHECK(got == -std::numeric_limits<Acc>::infinity());
    } else if (k >= n && p >= 1) {
      CHECK(got == -std::numeric_limits<Acc>::infinity());
    } else {
      CHECK(static_cast<ld>(got) == want);
    }
    ++checked;
  }
  CHECK(checked > 50);
}

}  // namespace

TEST_CASE("the sampler's support: vLLM's top-k then top-p, float and double rows", "[sampler]") {
  random_rows<float>(1);
  random_rows<double>(2);
}

TEST_CASE("the sampler's support: ties kept together, p -> 0, k = 1, the temperature, off", "[sampler]") {
  using grpokit::detail::sampler_threshold;
  const std::vector<float> z{1.f, 3.f, 2.f, 3.f, -0.f, 0.f, 2.f};
  const float inf = std::numeric_limits<float>::infinity();
  CHECK(sampler_threshold<Ops, float>(z.data(), 7, 1.f, 0, 1.0) == -inf);   // off
  CHECK(sampler_threshold<Ops, float>(z.data(), 7, 1.f, 7, 1.0) == -inf);   // k = V: off
  CHECK(sampler_threshold<Ops, float>(z.data(), 7, 1.f, 1, 1.0) == 3.f);    // the two 3s stay
  CHECK(sampler_threshold<Ops, float>(z.data(), 7, 1.f, 3, 1.0) == 2.f);    // the third largest is a 2: both stay
  CHECK(sampler_threshold<Ops, float>(z.data(), 7, 1.f, 6, 1.0) == 0.f);    // -0 and +0 are one value
  CHECK(sampler_threshold<Ops, float>(z.data(), 7, 1.f, 0, 1e-9) == 3.f);   // p -> 0: the largest value
  CHECK(sampler_threshold<Ops, float>(z.data(), 7, 0.5f, 3, 1.0) == 1.f);   // on z = x * inv_t: the 2s are 1s
  // top-p over the top-k set: masses e^(3-3) = 1 twice, e^(2-3) twice: Z = 2 + 2/e; the 3s hold
  // 2 / Z = 0.7311: p = 0.7 keeps them alone, p = 0.75 needs the 2s
  CHECK(sampler_threshold<Ops, float>(z.data(), 7, 1.f, 4, 0.7) == 3.f);
  CHECK(sampler_threshold<Ops, float>(z.data(), 7, 1.f, 4, 0.75) == 2.f);
  CHECK(sampler_threshold<Ops, float>(z.data(), 7, 1.f, 4, 1.0) == 2.f);
}

namespace {

// token_logprobs and logits_backward under cfg.top_k / cfg.top_p against the long-double rows
// renormalised over the support (z >= the vLLM threshold, also above the pruning one under
// vocab_prune), the gradient of g logp + h H with the support held fixed (vLLM's mask).
// Returns how many targets fell outside the support.
template <class P>
int rows_over_the_support(std::uint64_t seed, std::int64_t V, std::int64_t k, double p, double tol) {
  using R = grpokit::accum_t<P>;
  using S = grpokit::storage_t<P>;
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> g(0, 2);
  const std::int64_t T = 6;
  std::vector<S> x(static_cast<std::size_t>(T * V));
  for (auto& v : x) v = static_cast<S>(g(rng));
  std::vector<std::int64_t> y(static_cast<std::size_t>(T));
  for (auto& t : y) t = std::uniform_int_distribution<std::int64_t>(0, V - 1)(rng);
  grpokit::loss_config cfg;
  cfg.top_k = k;
  cfg.top_p = p;
  cfg.temperature = 0.8;
  cfg.prune_rho = 0.01;
  const R inv_t = static_cast<R>(1.0 / 0.8);
  std::vector<R> logp(y.size()), ent(y.size()), lse(y.size()), dlogp(y.size()), dent(y.size());
  grpokit::host::token_logprobs<P>({{x.data(), T, V, V}, y, {}}, cfg, {logp, ent, lse});
  for (std::size_t t = 0; t < y.size(); ++t) dlogp[t] = static_cast<R>(0.5 + t), dent[t] = static_cast<R>(0.3 - 0.1 * t);
  std::vector<S> dx(x.size());
  grpokit::host::logits_backward<P>({{x.data(), T, V, V}, y, {}}, {lse, ent, dlogp, dent}, cfg, {dx.data(), T, V, V});
  int outside = 0;
  for (std::int64_t t = 0; t < T; ++t) {
    std::vector<R> z(static_cast<std::size_t>(V));
    for (std::int64_t v = 0; v < V; ++v) z[v] = Ops::mul(grpokit::math::load<R>(x[t * V + v]), inv_t);
    bool near = false;
    ld tau = vllm_threshold(z, k, p, near);
    if (P::vocab_prune) tau = std::max<ld>(tau, *std::max_element(z.begin(), z.end()) + std::log(ld(cfg.prune_rho)));
    ld sum = 0, m = *std::max_element(z.begin(), z.end());
    for (R v : z)
      if (v >= tau) sum += std::exp(ld(v) - m);
    const ld want_lse = m + std::log(sum);
    ld h = 0;
    for (R v : z)
      if (v >= tau) h -= std::exp(ld(v) - want_lse) * (ld(v) - want_lse);
    INFO("seed " << seed << ", row " << t << ", V " << V << ", k " << k << ", p " << p);
    if (near) continue;
    CHECK(std::fabs(lse[t] - want_lse) <= tol * (1 + std::fabs(want_lse)));
    CHECK(std::fabs(ent[t] - h) <= tol * (1 + std::fabs(h)));
    const bool in = z[y[t]] >= tau;
    outside += !in;
    if (in) CHECK(std::fabs(logp[t] - (ld(z[y[t]]) - want_lse)) <= tol * (1 + std::fabs(want_lse)));
    else CHECK(logp[t] == -std::numeric_limits<R>::infinity());
    for (std::int64_t v = 0; v < V; ++v) {
      ld want = v == y[t] ? ld(dlogp[t]) * ld(inv_t) : 0;  // the target's term, also outside (math::dlogit)
      if (z[v] >= tau) {
        const ld lp = ld(z[v]) - want_lse, pv = std::exp(lp);
        want -= (ld(dlogp[t]) * pv + ld(dent[t]) * pv * (lp + h)) * ld(inv_t);
      }
      CHECK(std::fabs(static_cast<ld>(grpokit::math::load<R>(dx[t * V + v])) - want) <= tol * 10);
    }
  }
  return outside;
}

}  // namespace

TEST_CASE("token_logprobs and logits_backward over the sampler's support: renormalised rows, masked gradient",
          "[sampler]") {
  using D = grpokit::precision<double, double>;
  using F = grpokit::precision<float, float>;
  std::uint64_t seed = 10;
  int outside = 0;
  for (const std::int64_t V : {1, 7, 300, 1031}) {
    for (const auto& kp : std::vector<std::pair<std::int64_t, double>>{{0, 0.9}, {5, 1.0}, {20, 0.7}, {1, 0.5}}) {
      const std::int64_t k = kp.first;
      const double p = kp.second;
      outside += rows_over_the_support<grpokit::policy<D>>(++seed, V, k, p, 1e-12);
      outside += rows_over_the_support<grpokit::policy<D, grpokit::mask::vocab_prune, grpokit::chunk<64>>>(++seed, V, k,
                                                                                                           p, 1e-12);
      outside += rows_over_the_support<grpokit::policy<F>>(++seed, V, k, p, 2e-5);
      outside += rows_over_the_support<grpokit::policy<F, grpokit::reduction::batch_invariant>>(++seed, V, k, p, 2e-5);
    }
  }
  CHECK(outside > 0);  // targets outside the support: logp = -inf, the target term alone
}

TEST_CASE("the sampler's support in the loss: a target outside is masked as pruned; a bad top_k",
          "[sampler]") {
  using P = grpokit::policy<grpokit::precision<double, double>>;
  // row 0's target is its smallest logit, outside a top-2 support; row 1's is its largest
  const std::vector<double> x{0.0, 3.0, 2.0, 1.0, 4.0, 0.5, 2.5, 3.5};
  const std::vector<std::int64_t> y{0, 0}, off{0, 2};
  const std::vector<double> adv{1.0}, old{-1.0, -1.0};
  grpokit::loss_config cfg;
  cfg.top_k = 2;
  std::vector<double> dx(x.size());
  grpokit::rollout_batch<double> b;
  b.seq_offsets = off;
  b.adv = adv;
  b.logp_old = old;
  const auto r = grpokit::host::fused_loss<P>({{x.data(), 2, 4, 4}, y, {}}, b, cfg, {dx.data(), 2, 4, 4});
  CHECK(r.metrics.masked_tokens_vocab_prune == 1);
  CHECK(r.metrics.tokens_kept == 1);
  for (int v = 0; v < 4; ++v) CHECK(dx[v] == 0.0);  // the masked token's row gets no gradient
  cfg.top_k = -1;
  REQUIRE_ERROR(grpokit::host::fused_loss<P>({{x.data(), 2, 4, 4}, y, {}}, b, cfg, {dx.data(), 2, 4, 4}), "top_k");
}
