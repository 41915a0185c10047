// host::estimate_noise, two_batch_noise and gradient_noise_ema on synthetic gradients with a known
// inter- and intra-prompt covariance: g_ij = G + a_i + e_ij in d dimensions, a_i ~ N(0, s_inter^2 / d I),
// e_ij ~ N(0, s_intra^2 / d I), so tr Sigma_inter = s_inter^2 and tr Sigma_intra = s_intra^2. Every
// estimate's mean over many seeds lies within 4 standard errors of the truth, and a biased variant
// (no n / (n - 1)) does not: the test can fail.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include <grpokit/host/gradient_noise.hpp>

#include "catch.hpp"

namespace {

constexpr int d = 12;
using vec = std::vector<double>;

double sq(const vec& v) {
  double s = 0;
  for (double x : v) s += x * x;
  return s;
}


struct step_norms {
  std::vector<double> rollout_sq, group_mean_sq;
  std::vector<std::int64_t> offsets{0};
  double batch_mean_sq = 0;
};

// One batch of groups of the given sizes.
step_norms draw(std::mt19937_64& rng, const std::vector<std::int64_t>& sizes, const vec& G, double s_inter,
                double s_intra) {
  std::normal_distribution<double> n01(0, 1);
  step_norms s;
  vec batch(d, 0.0);
  for (auto n : sizes) {
    vec m(G);
    for (auto& x : m) x += n01(rng) * s_inter / std::sqrt(double(d));
    vec mean(d, 0.0);
    for (std::int64_t j = 0; j < n; ++j) {
      vec g(m);
      for (auto& x : g) x += n01(rng) * s_intra / std::sqrt(double(d));
      s.rollout_sq.push_back(sq(g));
      for (int k = 0; k < d; ++k) mean[k] += g[k] / double(n);
    }
    s.group_mean_sq.push_back(sq(mean));
    s.offsets.push_back(s.offsets.back() + n);
    for (int k = 0; k < d; ++k) batch[k] += mean[k] / double(sizes.size());
  }
  s.batch_mean_sq = sq(batch);
  return s;
}

struct moments {
  double sum = 0, sumsq = 0;
  int n = 0;
  void add(double x) {
    sum += x;
    sumsq += x * x;
    ++n;
  }
  double mean() const { return sum / n; }
  double se() const { return std::sqrt((sumsq / n - mean() * mean()) / (n - 1)); }
  bool near(double want) const { return std::fabs(mean() - want) <= 4 * se(); }
};

}  // namespace

TEST_CASE("estimate_noise: |G|^2, tr Sigma_inter and tr Sigma_intra unbiased over many seeds", "[noise]") {
  const vec G(d, 0.35);  // |G|^2 = 12 * 0.1225 = 1.47
  for (const auto& sizes : std::vector<std::vector<std::int64_t>>{{4, 4, 4, 4, 4, 4, 4, 4}, {2, 7, 1, 3, 16, 5}}) {
    for (const auto& s : std::vector<std::pair<double, double>>{{0.5, 3.0}, {1.2, 0.4}}) {
      std::mt19937_64 rng(11 + sizes.size());
      moments g2, inter, intra, naive_intra;
      for (int trial = 0; trial < 3000; ++trial) {
        const step_norms n = draw(rng, sizes, G, s.first, s.second);
        const auto c = grpokit::host::estimate_noise(n.rollout_sq, n.offsets, n.group_mean_sq, n.batch_mean_sq);
        g2.add(c.grad_sq);
        inter.add(c.tr_inter);
        intra.add(c.tr_intra);
        CHECK(c.trace == c.tr_inter + c.tr_intra);
        // the same without the n / (n - 1) correction: biased low by (n - 1) / n
        double naive = 0;
        int groups = 0;
        for (std::size_t g = 0; g + 1 < n.offsets.size(); ++g) {
          const auto lo = n.offsets[g], hi = n.offsets[g + 1];
          if (hi - lo < 2) continue;
          double m = 0;
          for (auto i = lo; i < hi; ++i) m += n.rollout_sq[i];
          naive += m / double(hi - lo) - n.group_mean_sq[g];
          ++groups;
        }
        naive_intra.add(naive / groups);
      }
      INFO("sizes " << sizes.size() << " s_inter " << s.first << " s_intra " << s.second);
      INFO("|G|^2 " << g2.mean() << " +- " << g2.se() << ", inter " << inter.mean() << " +- " << inter.se()
                    << ", intra " << intra.mean() << " +- " << intra.se());
      CHECK(g2.near(sq(G)));
      CHECK(inter.near(s.first * s.first));
      CHECK(intra.near(s.second * s.second));
      CHECK_FALSE(naive_intra.near(s.second * s.second));
    }
  }
}

TEST_CASE("two_batch_noise: |G|^2 and tr Sigma from a small and a big batch, unbiased", "[noise]") {
  const vec G(d, -0.2);
  const double s_total = 2.0;  // tr Sigma of one example
  std::mt19937_64 rng(5);
  std::normal_distribution<double> n01(0, 1);
  moments g2, trace;
  for (int trial = 0; trial < 3000; ++trial) {
    const int b_small = 3, b_big = 24;
    vec small(d, 0.0), big(d, 0.0);
    for (int k = 0; k < b_big; ++k) {
      vec g(G);
      for (auto& x : g) x += n01(rng) * s_total / std::sqrt(double(d));
      for (int c = 0; c < d; ++c) {
        if (k < b_small) small[c] += g[c] / b_small;
        big[c] += g[c] / b_big;
      }
    }
    const auto c = grpokit::host::two_batch_noise(sq(small), b_small, sq(big), b_big);
    g2.add(c.grad_sq);
    trace.add(c.trace);
  }
  CHECK(g2.near(sq(G)));
  CHECK(trace.near(s_total * s_total));
}

TEST_CASE("gradient_noise_ema: bias-corrected averages, skipped steps, the critical batch sizes", "[noise]") {
  grpokit::host::gradient_noise_ema ema(0.9);
  CHECK(ema.estimate(4).steps == 0);
  grpokit::noise_components c;
  c.grad_sq = 2;
  c.tr_inter = 1;
  c.tr_intra = 8;
  c.trace = 9;
  ema.update(c);  // one step: the corrected average is the step itself, not 10% of it
  auto s = ema.estimate(4);
  CHECK(s.mean.grad_sq == Approx(2).epsilon(1e-15));
  CHECK(s.b_crit == Approx((1 + 8.0 / 4) / 2));  // (tr_inter + tr_intra / K) / |G|^2
  CHECK(s.n_crit == Approx(4 * s.b_crit));
  CHECK(s.b_simple == Approx(9.0 / 2));
  grpokit::noise_components bad = c;
  bad.tr_intra = std::numeric_limits<double>::quiet_NaN();
  ema.update(bad);  // skipped
  CHECK(ema.estimate(4).steps == 1);
  for (int i = 0; i < 50; ++i) ema.update(c);
  CHECK(ema.estimate(4).mean.tr_intra == Approx(8));
  c.grad_sq = -1;  // a noisy step can make |G|^2 negative: no size from it
  grpokit::host::gradient_noise_ema neg;
  neg.update(c);
  CHECK(std::isnan(neg.estimate(4).b_crit));
}

TEST_CASE("gradient_noise_ema over noisy steps converges to the true critical batch size", "[noise]") {
  const vec G(d, 0.3);
  const double s_inter = 0.6, s_intra = 2.5, K = 4;
  const double want = (s_inter * s_inter + s_intra * s_intra / K) / sq(G);
  std::mt19937_64 rng(99);
  grpokit::host::gradient_noise_ema ema(0.999);
  for (int step = 0; step < 6000; ++step) {
    const step_norms n = draw(rng, std::vector<std::int64_t>(16, 4), G, s_inter, s_intra);
    ema.update(grpokit::host::estimate_noise(n.rollout_sq, n.offsets, n.group_mean_sq, n.batch_mean_sq));
  }
  const auto s = ema.estimate(K);
  INFO("b_crit " << s.b_crit << " want " << want);
  CHECK(s.b_crit == Approx(want).epsilon(0.1));
  CHECK(s.mean.tr_intra == Approx(s_intra * s_intra).epsilon(0.05));
}

TEST_CASE("estimate_noise and two_batch_noise reject what they cannot use", "[noise][errors]") {
  const std::vector<double> r{1, 2, 3, 4}, gm{1, 2}, one{1};
  const std::vector<std::int64_t> off{0, 2, 4}, single{0, 4}, singletons{0, 1, 2};
  REQUIRE_ERROR(grpokit::host::estimate_noise(r, single, one, 1.0), "at least 2 groups");
  REQUIRE_ERROR(grpokit::host::estimate_noise(r, off, one, 1.0), "group_mean_sq needs 2");
  REQUIRE_ERROR(grpokit::host::estimate_noise(std::vector<double>{1, 2}, singletons, gm, 1.0), "every group has one");
  REQUIRE_ERROR(grpokit::host::estimate_noise(r, off, gm, std::nan("")), "batch_mean_sq");
  REQUIRE_ERROR(grpokit::host::estimate_noise(std::vector<double>{1, 2, std::nan(""), 4}, off, gm, 1.0), "rollout_sq");
  REQUIRE_ERROR(grpokit::host::estimate_noise(std::vector<double>{1, 2, 3}, off, gm, 1.0), "group_offsets");
  REQUIRE_ERROR(grpokit::host::two_batch_noise(1, 4, 1, 4), "b_small < b_big");
  REQUIRE_ERROR(grpokit::host::gradient_noise_ema(1.0), "beta");
}
