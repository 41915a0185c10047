// compute_advantages against the long-double reference for every baseline and scale, with
// variable group sizes, singletons, zero-variance groups and ties at the median.
#include <algorithm>
#include <functional>
#include <random>
#if defined(_OPENMP)
#include <omp.h>
#endif

#include "catch.hpp"
#include "support.hpp"

namespace {

struct groups_case {
  std::vector<double> rewards;
  std::vector<std::int64_t> offsets;
  std::vector<double> log_ratio, weight;
  std::vector<double> group_base;  // [G] an external baseline: often a reward of the group, sometimes not
  std::vector<double> tokens;      // [S] response lengths, some 0
};

groups_case make_groups(std::mt19937_64& rng, const std::vector<std::int64_t>& sizes, bool binary) {
  groups_case c;
  c.offsets.assign(1, 0);
  std::uniform_int_distribution<int> coin(0, 1);
  std::normal_distribution<double> n(0, 1);
  for (auto s : sizes) {
    c.offsets.push_back(c.offsets.back() + s);
    for (std::int64_t i = 0; i < s; ++i) c.rewards.push_back(binary ? coin(rng) : std::round(n(rng) * 4) / 4);
  }
  for (std::size_t i = 0; i < c.rewards.size(); ++i) {
    c.log_ratio.push_back(n(rng) * 3);
    c.weight.push_back(std::fabs(n(rng)));
    c.tokens.push_back(coin(rng) ? std::floor(std::fabs(n(rng)) * 40) : std::floor(std::fabs(n(rng)) * 3));
  }
  for (std::size_t g = 0; g + 1 < c.offsets.size(); ++g)
    c.group_base.push_back(coin(rng) ? c.rewards[static_cast<std::size_t>(c.offsets[g])] : n(rng));
  return c;
}

template <class Baseline, class Real>
void check(const groups_case& c, ref::base b, const grpokit::advantage_config& cfg, bool with_weight, double tol,
           bool with_tokens = false) {
  using P = grpokit::policy<grpokit::precision<Real, Real>, Baseline>;
  const std::int64_t S = static_cast<std::int64_t>(c.rewards.size());
  const auto r = support::cast<Real>(c.rewards);
  const auto lr = support::cast<Real>(c.log_ratio);
  const auto w = with_weight ? support::cast<Real>(c.weight) : std::vector<Real>{};
  const auto gb = b == ref::base::external ? support::cast<Real>(c.group_base) : std::vector<Real>{};
  const auto tk = with_tokens || b == ref::base::opo ? support::cast<Real>(c.tokens) : std::vector<Real>{};
  std::vector<Real> adv(S);
  std::vector<std::uint8_t> keep(S);
  const auto st = grpokit::host::compute_advantages<P>({r, c.offsets, lr, w, gb, tk}, cfg, {adv, keep});
  const auto want = ref::advantages(support::cast<ref::ld>(r), c.offsets, b, cfg, support::cast<ref::ld>(lr),
                                    support::cast<ref::ld>(w), support::cast<ref::ld>(gb), support::cast<ref::ld>(tk));
  std::int64_t zero_var = 0, singles = 0;
  for (std::size_t g = 0; g + 1 < c.offsets.size(); ++g) {
    const auto lo = c.offsets[g], hi = c.offsets[g + 1];
    bool eq = true;
    for (auto i = lo; i < hi; ++i) eq = eq && r[i] == r[lo];
    zero_var += eq;
    singles += hi - lo == 1;
  }
  CHECK(st.zero_variance_groups == zero_var);
  CHECK(st.singleton_groups == singles);
  for (std::int64_t i = 0; i < S; ++i) {
    INFO("sequence " << i << " reward " << r[i]);
    CHECK(std::isfinite(static_cast<double>(adv[i])));
    CHECK(support::close(adv[i], static_cast<double>(want.adv[i]), tol, tol));
    CHECK(int(keep[i]) == want.keep[i]);
  }
}

template <class Real>
void sweep(double tol) {
  std::mt19937_64 rng(11);
  for (int rep = 0; rep < 20; ++rep) {
    const auto c = make_groups(rng, {1, 2, 3, 5, 8, 7, 1, 64, 4}, rep % 2 == 0);
    for (auto scale : {grpokit::adv_scale::group, grpokit::adv_scale::batch, grpokit::adv_scale::none,
                       grpokit::adv_scale::gpg, grpokit::adv_scale::whiten}) {
      grpokit::advantage_config cfg;
      cfg.scale = scale;
      if (rep % 3 == 1) cfg.clip_low = -0.75;  // binds some of the advantages of every scale
      if (rep % 4 == 1) cfg.clip_high = 0.5;
      cfg.mask_zero_variance = rep % 3 == 0;
      cfg.std_floor = rep % 4 == 0 ? 0.1 : 0.0;
      cfg.equal_group_weight = rep % 5 == 1;
      check<grpokit::baseline::mean, Real>(c, ref::base::mean, cfg, false, tol);
      check<grpokit::baseline::median, Real>(c, ref::base::median, cfg, false, tol);
      check<grpokit::baseline::leave_one_out, Real>(c, ref::base::loo, cfg, false, tol);
      check<grpokit::baseline::ess_scaled, Real>(c, ref::base::ess, cfg, false, tol);
      check<grpokit::baseline::ess_scaled, Real>(c, ref::base::ess, cfg, true, tol);
      check<grpokit::baseline::external, Real>(c, ref::base::external, cfg, false, tol);
      check<grpokit::baseline::pass_at_k, Real>(c, ref::base::pass_at_k, cfg, false, tol);
      check<grpokit::baseline::opo, Real>(c, ref::base::opo, cfg, false, tol);
      check<grpokit::baseline::mean, Real>(c, ref::base::mean, cfg, false, tol, /*with_tokens=*/true);
      cfg.fold_lr_factor = true;
      check<grpokit::baseline::ess_scaled, Real>(c, ref::base::ess, cfg, false, tol);
    }
  }
}

}  // namespace

TEST_CASE("advantages match the reference for every baseline and scale", "[advantages]") {
  sweep<double>(1e-12);
  sweep<float>(1e-5);
}

TEST_CASE("median baseline: lower median, MAD, one pivot per odd group, lowest index on ties", "[advantages]") {
  // [1, 1, 0]: median 1, MAD 0 -> A = (r - 1) / 1e-3, pivot = index 0 (first of the tied 1s)
  // [0, 2, 2, 5]: even -> lower median 2, no pivot, |r - 2| = {2, 0, 0, 3} -> MAD 0
  // [0, 1.5, 2]: median 1.5, MAD = lower median {1.5, 0, 0.5} = 0.5 (the GSM example of MC-GRPO)
  std::vector<double> r{1, 1, 0, 0, 2, 2, 5, 0, 1.5, 2}, adv(10);
  std::vector<std::int64_t> off{0, 3, 7, 10};
  std::vector<std::uint8_t> keep(10);
  grpokit::host::compute_advantages<grpokit::policy<grpokit::precision<double, double>, grpokit::baseline::median>>(
      {r, off, {}, {}}, {}, {adv, keep});
  CHECK(keep == std::vector<std::uint8_t>{0, 1, 1, 1, 1, 1, 1, 1, 0, 1});
  CHECK(adv[2] == Approx(-1 / 1e-3));
  CHECK(adv[0] == 0);
  CHECK(adv[3] == Approx(-2 / 1e-3));
  CHECK(adv[6] == Approx(3 / 1e-3));
  CHECK(adv[7] == Approx(-1.5 / (0.5 + 1e-3)));
  CHECK(adv[9] == Approx(0.5 / (0.5 + 1e-3)));
}

TEST_CASE("singleton and zero-variance groups give advantage 0 and can be masked", "[advantages]") {
  using P = grpokit::policy<grpokit::precision<float, float>>;
  std::vector<float> r{0.1f, 0.1f, 0.1f, 7, 1, 0}, adv(6);
  std::vector<std::int64_t> off{0, 3, 4, 6};
  std::vector<std::uint8_t> keep(6);
  grpokit::advantage_config cfg;
  cfg.eps = 0;  // no eps: a zero-variance group must still not divide 0 by 0
  cfg.mask_zero_variance = true;
  const auto st = grpokit::host::compute_advantages<P>({r, off, {}, {}}, cfg, {adv, keep});
  CHECK(adv[0] == 0);
  CHECK(adv[1] == 0);
  CHECK(adv[2] == 0);
  CHECK(adv[3] == 0);
  CHECK(adv[4] > 0);
  CHECK(keep == std::vector<std::uint8_t>{0, 0, 0, 0, 1, 1});
  CHECK(st.zero_variance_groups == 2);
  CHECK(st.singleton_groups == 1);
  CHECK(st.excluded_seqs == 4);
}

TEST_CASE("VCPO ESS is computed in log space without overflow", "[advantages][ess]") {
  using P = grpokit::policy<grpokit::precision<double, double>, grpokit::baseline::ess_scaled>;
  // log-ratios of 800 overflow exp in double; ESS = (sum w)^2 / sum w^2 is still defined
  std::vector<double> r{1, 0, 1, 0}, lr{800, 800, 0, -5}, adv(4);
  std::vector<std::int64_t> off{0, 2, 4};
  std::vector<std::uint8_t> keep(4);
  const auto st = grpokit::host::compute_advantages<P>({r, off, lr, {}}, {}, {adv, keep});
  CHECK(st.ess == Approx(2.0));
  CHECK(st.ess_ratio == Approx(0.5));
  CHECK(st.lr_factor == Approx(std::sqrt(0.5)));
  for (double a : adv) CHECK(std::isfinite(a));
  // the first group's baseline is the plain mean (equal weights): A = +-1/(std + eps)
  CHECK(adv[0] == Approx(0.5 / (std::sqrt(0.5) + 1e-6)));
}

TEST_CASE("external baseline (ReMax): r - b per group, equal rewards keep their advantage", "[advantages]") {
  using P = grpokit::policy<grpokit::precision<double, double>, grpokit::baseline::external>;
  // ReMax: one sampled rollout per prompt, the greedy rollout's reward as b, no scaling
  std::vector<double> r{1, 0, 1, 1, 0.5}, base{0, 0, 1, 0.25}, adv(5);
  const std::vector<std::int64_t> off{0, 1, 2, 4, 5};
  std::vector<std::uint8_t> keep(5);
  grpokit::advantage_config cfg;
  cfg.scale = grpokit::adv_scale::none;
  cfg.mask_zero_variance = true;  // does not apply: an equal group still has r - b
  const auto st = grpokit::host::compute_advantages<P>({r, off, {}, {}, base}, cfg, {adv, keep});
  CHECK(adv == std::vector<double>{1, 0, 0, 0, 0.25});
  CHECK(keep == std::vector<std::uint8_t>{1, 1, 1, 1, 1});
  CHECK(st.zero_variance_groups == 4);  // every group here has equal rewards (singletons and {1, 1})
  REQUIRE_ERROR((grpokit::host::compute_advantages<P>({r, off, {}, {}, {}}, cfg, {adv, keep})),
                "group_baseline: the external baseline needs 4 per-group baselines, got 0");
  std::vector<double> short_base{0, 0, 1};
  REQUIRE_ERROR((grpokit::host::compute_advantages<P>({r, off, {}, {}, short_base}, cfg, {adv, keep})),
                "group_baseline: the external baseline needs 4");
  base[2] = std::nan("");
  REQUIRE_ERROR((grpokit::host::compute_advantages<P>({r, off, {}, {}, base}, cfg, {adv, keep})),
                "group_baseline[2] is not finite");
}

TEST_CASE("very large groups (BroRL): n = 512 and 4096, and tiny and huge groups mixed", "[advantages]") {
  std::mt19937_64 rng(2026);
  for (const auto& sizes : std::vector<std::vector<std::int64_t>>{{512}, {4096}, {1, 2, 4096, 3, 512, 1, 7}}) {
    for (const bool binary : {true, false}) {
      const auto c = make_groups(rng, sizes, binary);
      grpokit::advantage_config cfg;
      check<grpokit::baseline::mean, double>(c, ref::base::mean, cfg, false, 1e-10);
      check<grpokit::baseline::median, double>(c, ref::base::median, cfg, false, 1e-10);
      check<grpokit::baseline::leave_one_out, double>(c, ref::base::loo, cfg, false, 1e-10);
      check<grpokit::baseline::ess_scaled, double>(c, ref::base::ess, cfg, false, 1e-10);
      check<grpokit::baseline::external, double>(c, ref::base::external, cfg, false, 1e-10);
      cfg.scale = grpokit::adv_scale::batch;
      check<grpokit::baseline::median, float>(c, ref::base::median, cfg, false, 1e-5);
    }
  }
}

TEST_CASE("lower_median: the ((n-1)/2)-th smallest for every n up to 64 and orders with ties", "[advantages]") {
  std::mt19937_64 rng(8);
  std::uniform_int_distribution<int> small(0, 5);
  for (std::int64_t n = 1; n <= 64; ++n) {
    for (int rep = 0; rep < 5; ++rep) {
      std::vector<double> x(static_cast<std::size_t>(n)), scratch(x.size());
      for (auto& v : x) v = rep % 2 == 0 ? small(rng) : std::ldexp(static_cast<double>(rng() % 1000), -3);
      if (rep == 4) std::sort(x.begin(), x.end(), std::greater<double>());  // reversed: a heap's worst order
      std::vector<double> sorted = x;
      std::sort(sorted.begin(), sorted.end());
      INFO("n " << n << " rep " << rep);
      CHECK(grpokit::detail::lower_median(x.data(), n, scratch.data()) == sorted[static_cast<std::size_t>((n - 1) / 2)]);
    }
  }
}

TEST_CASE("equal_group_weight: every group's advantages weigh as a group of the mean size", "[advantages]") {
  // groups of 2 and 6 (mean 4): the small group's advantages are doubled, the large one's scaled by 2/3
  using P = grpokit::policy<grpokit::precision<double, double>>;
  const std::vector<double> r{1, 0, 1, 1, 0, 0, 0, 0};
  const std::vector<std::int64_t> off{0, 2, 8};
  std::vector<double> plain(8), equal(8);
  std::vector<std::uint8_t> keep(8);
  grpokit::advantage_config cfg;
  grpokit::host::compute_advantages<P>({r, off, {}, {}}, cfg, {plain, keep});
  cfg.equal_group_weight = true;
  grpokit::host::compute_advantages<P>({r, off, {}, {}}, cfg, {equal, keep});
  for (int i = 0; i < 2; ++i) CHECK(equal[i] == Approx(plain[i] * 2.0));
  for (int i = 2; i < 8; ++i) CHECK(equal[i] == Approx(plain[i] * 4.0 / 6.0));
}

TEST_CASE("a batch of more than 16384 rollouts: blocked batch sums on the host's threads", "[advantages]") {
  // host::compute_advantages sums a batch past parallel_ops::block in fixed blocks: the batch std
  // (scale = batch), ESS and the moments against the reference, and the same bits for any thread count
  std::mt19937_64 rng(4242);
  std::vector<std::int64_t> sizes;
  for (std::int64_t total = 0; total < 3 * grpokit::detail::parallel_ops::block + 77;) {
    sizes.push_back(total % 5 == 0 ? 700 : 1 + static_cast<std::int64_t>(rng() % 9));
    total += sizes.back();
  }
  const auto c = make_groups(rng, sizes, false);
  grpokit::advantage_config cfg;
  cfg.scale = grpokit::adv_scale::batch;
  check<grpokit::baseline::mean, double>(c, ref::base::mean, cfg, false, 1e-10);
  check<grpokit::baseline::ess_scaled, double>(c, ref::base::ess, cfg, false, 1e-10);
  check<grpokit::baseline::median, float>(c, ref::base::median, cfg, false, 1e-5);
  using P = grpokit::policy<grpokit::precision<double, double>, grpokit::baseline::ess_scaled>;
  const auto S = static_cast<std::int64_t>(c.rewards.size());
  auto run = [&](int threads) {
#if defined(_OPENMP)
    omp_set_num_threads(threads);
#else
    (void)threads;
#endif
    std::vector<double> adv(S);
    std::vector<std::uint8_t> keep(S);
    const auto st = grpokit::host::compute_advantages<P>({c.rewards, c.offsets, c.log_ratio, {}}, cfg, {adv, keep});
    adv.push_back(st.reward_std);
    adv.push_back(st.ess);
    adv.push_back(st.adv_mean);
    adv.push_back(st.adv_std);
    return adv;
  };
#if defined(_OPENMP)
  const int threads_before = omp_get_max_threads();
#endif
  const auto one = run(1), three = run(3);
#if defined(_OPENMP)
  omp_set_num_threads(threads_before);
#endif
  CHECK(support::same_bits(one, three));
  // the batch moments against long double
  const std::vector<ref::ld> r(c.rewards.begin(), c.rewards.end());
  CHECK(support::close(one[static_cast<std::size_t>(S)], static_cast<double>(ref::bessel_std(r)), 1e-12, 1e-12));
}

TEST_CASE("a non-finite advantage past the first block names the first such sequence", "[advantages]") {
  // median groups {0, 1, 2, 3} (MAD 1) everywhere but two {0, 0, 1} (MAD 0): with mad_eps = 0 the
  // last rollout of each of those has A = 1 / 0; the host finds it in its blocked pass
  const std::int64_t block = grpokit::detail::parallel_ops::block;
  std::vector<double> r;
  std::vector<std::int64_t> off{0};
  std::int64_t first_bad = -1;
  while (static_cast<std::int64_t>(r.size()) < 3 * block) {
    const auto at = static_cast<std::int64_t>(r.size());
    const bool zero_mad = at >= 2 * block + 100 && (first_bad < 0 || at >= 2 * block + 900) && at < 2 * block + 904;
    for (double v : zero_mad ? std::vector<double>{0, 0, 1} : std::vector<double>{0, 1, 2, 3}) r.push_back(v);
    if (zero_mad && first_bad < 0) first_bad = at + 2;
    off.push_back(static_cast<std::int64_t>(r.size()));
  }
  grpokit::advantage_config cfg;
  cfg.mad_eps = 0;
  std::vector<double> adv(r.size());
  std::vector<std::uint8_t> keep(r.size());
  using P = grpokit::policy<grpokit::precision<double, double>, grpokit::baseline::median>;
  std::ostringstream want;
  want << "advantage of sequence " << first_bad << " is not finite";
  REQUIRE_ERROR(grpokit::host::compute_advantages<P>({r, off, {}, {}}, cfg, {adv, keep}), want.str());
}

TEST_CASE("GPG: alpha = B / #(r != 0) over the batch; the clip binds last", "[advantages]") {
  // by hand: S = 8 rewards, 3 of them non-zero, alpha = 8/3; group 0 has mean 1/2, so A = +-(1/2)(8/3);
  // group 1 is all zero and group 2 a singleton: A = 0 (verl's GPG gives a singleton alpha r)
  using P = grpokit::policy<grpokit::precision<double, double>, grpokit::baseline::mean>;
  const std::vector<double> r{1, 0, 0, 1, 0, 0, 0, 2};
  const std::vector<std::int64_t> off{0, 4, 7, 8};
  std::vector<double> adv(8);
  std::vector<std::uint8_t> keep(8);
  grpokit::advantage_config cfg;
  cfg.scale = grpokit::adv_scale::gpg;
  grpokit::host::compute_advantages<P>({r, off, {}, {}}, cfg, {adv, keep});
  const double a = 4.0 / 3.0;
  const std::vector<double> want{a, -a, -a, a, 0, 0, 0, 0};
  for (std::size_t i = 0; i < 8; ++i) CHECK(adv[i] == Approx(want[i]).epsilon(1e-15));
  cfg.clip_low = -1;
  cfg.clip_high = 1.25;
  grpokit::host::compute_advantages<P>({r, off, {}, {}}, cfg, {adv, keep});
  CHECK(adv == std::vector<double>{1.25, -1, -1, 1.25, 0, 0, 0, 0});
}

TEST_CASE("OPO: the length-weighted baseline; whiten: REINFORCE++-baseline's token-weighted batch whitening",
          "[advantages]") {
  using D = grpokit::precision<double, double>;
  // OPO, group {1, 0} with 3 and 1 tokens: b = 3/4; group {2, 2, 5} with 0, 1, 1 tokens: b = 3.5
  std::vector<double> r{1, 0, 2, 2, 5}, tokens{3, 1, 0, 1, 1}, adv(5);
  const std::vector<std::int64_t> off{0, 2, 5};
  std::vector<std::uint8_t> keep(5);
  grpokit::advantage_config cfg;
  cfg.scale = grpokit::adv_scale::none;
  grpokit::host::compute_advantages<grpokit::policy<D, grpokit::baseline::opo>>({r, off, {}, {}, {}, tokens}, cfg,
                                                                                {adv, keep});
  CHECK(adv == std::vector<double>{0.25, -0.75, -1.5, -1.5, 1.5});
  REQUIRE_ERROR((grpokit::host::compute_advantages<grpokit::policy<D, grpokit::baseline::opo>>({r, off, {}, {}}, cfg,
                                                                                               {adv, keep})),
                "seq_tokens: the opo baseline needs 5 per-sequence token counts, got 0");
  tokens[1] = -1;
  REQUIRE_ERROR((grpokit::host::compute_advantages<grpokit::policy<D, grpokit::baseline::opo>>(
                    {r, off, {}, {}, {}, tokens}, cfg, {adv, keep})),
                "seq_tokens[1] must be >= 0");
  // whiten with the mean baseline: centred {0.5, -0.5, -1, -1, 2} with tokens {1, 1, 2, 1, 1}: the
  // token-weighted mean is -1/6, the Bessel variance sum w (c - mean)^2 / (6 - 1) = (22/3) / 5
  tokens = {1, 1, 2, 1, 1};
  cfg.scale = grpokit::adv_scale::whiten;
  cfg.eps = 0;
  grpokit::host::compute_advantages<grpokit::policy<D>>({r, off, {}, {}, {}, tokens}, cfg, {adv, keep});
  const double sd = std::sqrt(22.0 / 15.0);
  const std::vector<double> c{0.5, -0.5, -1, -1, 2};
  for (std::size_t i = 0; i < 5; ++i) CHECK(adv[i] == Approx((c[i] + 1.0 / 6.0) / sd));
}

TEST_CASE("several rewards per rollout (GDPO): each reward's group advantages, their weighted sum, whitened",
          "[advantages][multi]") {
  // against the reference: each column through ref::advantages, the weighted sum in long double, then
  // the sum whitened as ref::advantages whitens r - 0 (baseline::external with b = 0)
  using D = grpokit::precision<double, double>;
  for (std::uint64_t seed = 0; seed < 24; ++seed) {
    std::mt19937_64 rng(seed);
    const std::vector<std::int64_t> sizes{4, 1, 3, 5, 2, 7};
    const std::int64_t K = 1 + static_cast<std::int64_t>(seed % 3);
    std::vector<groups_case> parts;
    for (std::int64_t k = 0; k < K; ++k) parts.push_back(make_groups(rng, sizes, k % 2 == 0));
    const std::int64_t S = static_cast<std::int64_t>(parts[0].rewards.size());
    std::vector<double> rewards(static_cast<std::size_t>(S * K)), adv(S);
    for (std::int64_t i = 0; i < S; ++i)
      for (std::int64_t k = 0; k < K; ++k) rewards[static_cast<std::size_t>(i * K + k)] = parts[k].rewards[i];
    const std::vector<double> weights = seed % 2 ? std::vector<double>{} : std::vector<double>{1.0, -0.5, 2.0};
    const std::vector<double> tokens = seed % 4 == 3 ? parts[0].tokens : std::vector<double>{};
    std::vector<std::uint8_t> keep(S);
    grpokit::advantage_config cfg;
    cfg.scale = seed % 3 == 2 ? grpokit::adv_scale::none : grpokit::adv_scale::group;
    cfg.mask_zero_variance = seed % 5 == 1;
    cfg.clip_high = seed % 6 == 4 ? 0.5 : cfg.clip_high;
    cfg.clip_low = seed % 7 == 3 ? -0.4 : cfg.clip_low;
    cfg.std_floor = seed % 4 == 1 ? 0.8 : 0.0;  // binds on the components' spreads and on the sum's
    cfg.eps = seed % 3 == 1 ? 0.05 : cfg.eps;
    auto check = [&](auto policy, ref::base b) {
      using P = decltype(policy);
      const grpokit::span<const double> w(weights.data(), std::min<std::int64_t>(K, weights.size()));
      const auto st = grpokit::host::compute_advantages_multi<P>(
          {{rewards.data(), S, K, K}, parts[0].offsets, weights.empty() ? grpokit::span<const double>{} : w, tokens},
          cfg, {adv, keep});
      grpokit::advantage_config part = cfg;
      part.clip_low = -ref::inf;
      part.clip_high = ref::inf;
      std::vector<ref::ld> sum(static_cast<std::size_t>(S), 0);
      std::vector<int> keep_all(static_cast<std::size_t>(S), 1);
      for (std::int64_t k = 0; k < K; ++k) {
        const auto a = ref::advantages(support::cast<ref::ld>(parts[k].rewards), parts[0].offsets, b, part, {}, {}, {},
                                       support::cast<ref::ld>(tokens));
        for (std::int64_t i = 0; i < S; ++i) {
          sum[i] += (weights.empty() ? 1.0L : static_cast<ref::ld>(weights[k])) * a.adv[i];
          keep_all[i] = keep_all[i] && a.keep[i];
        }
      }
      grpokit::advantage_config whiten;
      whiten.scale = grpokit::adv_scale::whiten;
      whiten.clip_low = cfg.clip_low;
      whiten.clip_high = cfg.clip_high;
      whiten.eps = cfg.eps;
      whiten.std_floor = cfg.std_floor;
      const auto want = ref::advantages(sum, parts[0].offsets, ref::base::external, whiten, {}, {},
                                        std::vector<ref::ld>(sizes.size(), 0), support::cast<ref::ld>(tokens));
      INFO("seed " << seed << ", K " << K << ", baseline " << int(b));
      std::int64_t kept = 0;
      ref::ld sum_kept = 0, sq_kept = 0;
      for (std::int64_t i = 0; i < S; ++i) {
        CHECK(support::close(adv[i], static_cast<double>(want.adv[i]), 1e-10, 1e-12));
        CHECK(int(keep[i]) == keep_all[i]);
        kept += keep_all[i];
        if (keep_all[i]) sum_kept += want.adv[i];
      }
      CHECK(st.excluded_seqs == S - kept);
      const ref::ld mean_kept = kept > 0 ? sum_kept / kept : 0;  // the moments over the rollouts kept
      for (std::int64_t i = 0; i < S; ++i)
        if (keep_all[i]) sq_kept += (want.adv[i] - mean_kept) * (want.adv[i] - mean_kept);
      CHECK(support::close(st.adv_mean, static_cast<double>(mean_kept), 1e-10, 1e-12));
      CHECK(support::close(st.adv_std, static_cast<double>(kept > 0 ? std::sqrt(sq_kept / kept) : 0), 1e-10, 1e-12));
    };
    check(grpokit::policy<D>{}, ref::base::mean);
    check(grpokit::policy<D, grpokit::baseline::leave_one_out>{}, ref::base::loo);  // NeMo-RL's default
  }
}

TEST_CASE("several rewards per rollout: bad shapes and weights", "[advantages][multi]") {
  using P = grpokit::policy<grpokit::precision<double, double>>;
  std::vector<double> r{1, 0, 0, 1}, adv(2), w{1, std::nan("")};
  std::vector<std::uint8_t> keep(2);
  const std::vector<std::int64_t> off{0, 2};
  REQUIRE_ERROR((grpokit::host::compute_advantages_multi<P>({{r.data(), 2, 2, 2}, off, w}, {}, {adv, keep})),
                "weights[1] is not finite");
  REQUIRE_ERROR(
      (grpokit::host::compute_advantages_multi<P>({{r.data(), 2, 2, 2}, off, {w.data(), 1}}, {}, {adv, keep})),
                "weights: needs 2 weights (one per reward) or none, got 1");
  REQUIRE_ERROR((grpokit::host::compute_advantages_multi<P>({{r.data(), 2, 0, 2}, off, {}}, {}, {adv, keep})),
                "rewards: needs rows >= 0 and cols >= 1");
  REQUIRE_ERROR(
      (grpokit::host::compute_advantages_multi<P>({{r.data(), 2, 2, 2}, off, {}}, {}, {{adv.data(), 1}, keep})),
                "adv");
}
