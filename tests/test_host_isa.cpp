// The host's instruction-set targets (host/detail/isa.hpp, simd_rows.hpp): every target the CPU
// runs against the long-double reference, the SIMD exp and conversions against their definitions,
// AVX2 and AVX-512 bit for bit, and the GRPOKIT_HOST_ISA cap. A target the CPU lacks is reported
// and not run.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "catch.hpp"
#include "support.hpp"

namespace {

using grpokit::detail::host_isa;

std::vector<host_isa> targets_here() {
  std::vector<host_isa> t{host_isa::portable};
  if (grpokit::detail::cpu_isa() >= host_isa::avx2) t.push_back(host_isa::avx2);
  if (grpokit::detail::cpu_isa() >= host_isa::avx512) t.push_back(host_isa::avx512);
  if (t.size() < 3) WARN("this CPU runs only " << t.size() << " of the 3 host targets: the others are not tested here");
  return t;
}

// Restores the target the process started with.
struct isa_guard {
  host_isa saved = grpokit::detail::active_isa();
  ~isa_guard() { grpokit::detail::use_isa(saved); }
};

using support::ulp_error;

template <class S>
std::uint16_t bits16(S v) {
  return grpokit::detail::bit_cast<std::uint16_t>(v);
}

// One target's rows: logp, entropy, lse and the dlogits of every row of a random problem.
template <class P>
struct rows_out {
  std::vector<float> logp, entropy, lse;
  std::vector<typename P::storage_type> dlogits;
};

template <class P>
rows_out<P> run_rows(const ref::problem& p, const std::vector<typename P::storage_type>& logits,
                     const std::vector<float>& g_logp, const std::vector<float>& g_entropy,
                     const grpokit::loss_config& cfg, std::int64_t dx_offset) {
  rows_out<P> o;
  o.logp.resize(p.T);
  o.entropy.resize(p.T);
  o.lse.resize(p.T);
  grpokit::host::token_logprobs<P>({{logits.data(), p.T, p.V, p.V}, p.targets, {}}, cfg, {o.logp, o.entropy, o.lse});
  // dlogits at an offset: rows that start off the alignment of the non-temporal stores
  std::vector<typename P::storage_type> dx(static_cast<std::size_t>(p.T * p.V + dx_offset));
  grpokit::host::logits_backward<P>({{logits.data(), p.T, p.V, p.V}, p.targets, {}},
                                    {o.lse, o.entropy, g_logp, g_entropy}, cfg,
                                    {dx.data() + dx_offset, p.T, p.V, p.V});
  o.dlogits.assign(dx.begin() + dx_offset, dx.end());
  return o;
}

// The reference dlogits of row t: -p_v (g + g_H (log p_v + H)) over the kept columns, + [v = y] g
// (also for a pruned target, as logits_backward: its token is masked, g = 0, in a loss).
std::vector<ref::ld> ref_dlogits(const ref::problem& p, std::int64_t t, const ref::row_out& r, bool prune, double rho,
                                 ref::ld g, ref::ld g_h) {
  const auto x = ref::row_of(p, t);
  ref::ld m = -ref::inf;
  for (auto v : x) m = std::max(m, v);
  std::vector<ref::ld> d(x.size(), 0);
  for (std::size_t v = 0; v < x.size(); ++v) {
    if (static_cast<std::int64_t>(v) == p.targets[t]) d[v] += g;
    if (prune && std::exp(x[v] - m) < rho) continue;
    const ref::ld log_p = x[v] - r.lse;
    d[v] -= std::exp(log_p) * (g + g_h * (log_p + r.entropy));
  }
  return d;
}

template <class P>
void check_targets_against_reference(std::uint64_t seed, std::int64_t V, double tol, double out_rel) {
  using S = typename P::storage_type;
  isa_guard guard;
  std::mt19937_64 rng(seed);
  ref::problem p = ref::make_problem(rng, {3}, V, 3.0, false);
  support::round_logits<S>(p);
  const auto logits = support::to_storage<S>(p.logits);
  std::normal_distribution<float> n(0, 1);
  std::vector<float> g_logp(p.T), g_entropy(p.T);
  for (std::int64_t t = 0; t < p.T; ++t) {
    g_logp[t] = n(rng);
    g_entropy[t] = t == 1 ? 0.f : n(rng);
  }
  grpokit::loss_config cfg;
  cfg.prune_rho = 0.02;
  for (host_isa isa : targets_here()) {
    grpokit::detail::use_isa(isa);
    const auto got = run_rows<P>(p, logits, g_logp, g_entropy, cfg, 1);
    for (std::int64_t t = 0; t < p.T; ++t) {
      const auto want = ref::row(ref::row_of(p, t), p.targets[t], 1, P::vocab_prune, cfg.prune_rho);
      INFO("target " << grpokit::detail::isa_name(isa) << ", V = " << V << ", row " << t << ", seed " << seed);
      CHECK(support::close(got.lse[t], static_cast<double>(want.lse), tol, tol));
      CHECK(support::close(got.entropy[t], static_cast<double>(want.entropy), tol, tol));
      if (want.logp == -ref::inf)
        CHECK(got.logp[t] == -std::numeric_limits<float>::infinity());
      else
        CHECK(support::close(got.logp[t], static_cast<double>(want.logp), tol, tol));
      const auto d = ref_dlogits(p, t, want, P::vocab_prune, cfg.prune_rho, g_logp[t], g_entropy[t]);
      double worst = 0;
      for (std::int64_t v = 0; v < V; ++v) {
        const double g = grpokit::math::load<double>(got.dlogits[static_cast<std::size_t>(t * V + v)]);
        const double w = static_cast<double>(d[static_cast<std::size_t>(v)]);
        worst = std::max(worst, std::fabs(g - w) / (out_rel * std::fabs(w) + tol));
      }
      CHECK(worst <= 1.0);
    }
  }
}

template <class S>
using det = grpokit::policy<grpokit::precision<S, float>, grpokit::reduction::deterministic>;
template <class S>
using det_pruned = grpokit::policy<grpokit::precision<S, float>, grpokit::reduction::fast, grpokit::mask::vocab_prune>;

}  // namespace

TEST_CASE("every host target the CPU runs matches the reference rows and dlogits", "[isa]") {
  // V: one column, under / at / over one vector, a 1024-column block and a bit, rows long enough
  // for the non-temporal stores (>= 32 KiB of dlogits)
  std::uint64_t seed = 11;
  for (std::int64_t V : {1, 15, 16, 17, 1023, 1041, 20011}) {
    check_targets_against_reference<det<float>>(seed++, V, 2e-5, 1e-4);
    check_targets_against_reference<det_pruned<float>>(seed++, V, 2e-5, 1e-4);
#if defined(GRPOKIT_HAS_CUDA_HALF)
    check_targets_against_reference<det<__nv_bfloat16>>(seed++, V, 2e-5, 8e-3);
    check_targets_against_reference<det<__half>>(seed++, V, 2e-5, 1e-3);
#endif
  }
}

template <class P>
void check_same_bits(std::uint64_t seed, std::int64_t V) {
  using S = typename P::storage_type;
  isa_guard guard;
  std::mt19937_64 rng(seed);
  ref::problem p = ref::make_problem(rng, {4}, V, 4.0, false);
  const auto logits = support::to_storage<S>(p.logits);
  std::normal_distribution<float> n(0, 1);
  std::vector<float> g_logp(p.T), g_entropy(p.T);
  for (std::int64_t t = 0; t < p.T; ++t) {
    g_logp[t] = n(rng);
    g_entropy[t] = n(rng);
  }
  grpokit::loss_config cfg;
  cfg.prune_rho = 0.05;
  grpokit::detail::use_isa(host_isa::avx2);
  const auto a = run_rows<P>(p, logits, g_logp, g_entropy, cfg, 0);
  grpokit::detail::use_isa(host_isa::avx512);
  const auto b = run_rows<P>(p, logits, g_logp, g_entropy, cfg, 3);
  INFO("V = " << V << ", seed " << seed);
  CHECK(std::memcmp(a.logp.data(), b.logp.data(), a.logp.size() * sizeof(float)) == 0);
  CHECK(std::memcmp(a.entropy.data(), b.entropy.data(), a.entropy.size() * sizeof(float)) == 0);
  CHECK(std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * sizeof(float)) == 0);
  CHECK(std::memcmp(a.dlogits.data(), b.dlogits.data(), a.dlogits.size() * sizeof(S)) == 0);
  // in place: the dlogits over the logits, the same bits
  auto in_place = logits;
  grpokit::host::logits_backward<P>({{in_place.data(), p.T, p.V, p.V}, p.targets, {}},
                                    {b.lse, b.entropy, g_logp, g_entropy}, cfg, {in_place.data(), p.T, p.V, p.V},
                                    grpokit::backward_mode::in_place);
  CHECK(std::memcmp(in_place.data(), b.dlogits.data(), in_place.size() * sizeof(S)) == 0);
}

TEST_CASE("every host target finds a NaN or Inf logit wherever it is in a row", "[isa]") {
  // The one-read SIMD row finds a -Inf through its entropy sum and a NaN / +Inf through its max and
  // sums, with no test per column: put each in a full group, the padded last group and a second
  // 1024-column block, and check the error under check_finite and, without it, the online rows'
  // values (a -Inf logit is a column of p = 0 there).
  using F = det<float>;
  using B = grpokit::policy<grpokit::precision<float, float>, grpokit::reduction::batch_invariant>;
  isa_guard guard;
  std::mt19937_64 rng(5);
  std::normal_distribution<float> n(0, 2);
  const float bad_values[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                              -std::numeric_limits<float>::infinity()};
  for (host_isa isa : targets_here()) {
    grpokit::detail::use_isa(isa);
    for (std::int64_t V : {37, 2100}) {
      std::vector<float> logits(static_cast<std::size_t>(2 * V));
      for (auto& v : logits) v = n(rng);
      const std::vector<std::int64_t> targets{0, 1};
      for (std::int64_t column : {std::int64_t{3}, std::int64_t{17}, V - 1, std::int64_t{1030}}) {
        if (column >= V) continue;
        for (float bad : bad_values) {
          INFO("target " << grpokit::detail::isa_name(isa) << ", V = " << V << ", column " << column << ", value "
                         << bad);
          auto x = logits;
          x[static_cast<std::size_t>(V + column)] = bad;
          std::vector<float> logp(2), ent(2), lse(2), logp_b(2), ent_b(2), lse_b(2);
          REQUIRE_ERROR(grpokit::host::token_logprobs<F>({{x.data(), 2, V, V}, targets, {}}, {}, {logp, ent, lse}),
                        "logits row 1 contains NaN or Inf");
          grpokit::loss_config off;
          off.check_finite = false;
          grpokit::host::token_logprobs<F>({{x.data(), 2, V, V}, targets, {}}, off, {logp, ent, lse});
          grpokit::host::token_logprobs<B>({{x.data(), 2, V, V}, targets, {}}, off, {logp_b, ent_b, lse_b});
          for (int t = 0; t < 2; ++t) {
            CHECK(std::isnan(lse[t]) == std::isnan(lse_b[t]));
            CHECK(std::isnan(ent[t]) == std::isnan(ent_b[t]));
            if (std::isfinite(lse_b[t])) CHECK(std::fabs(lse[t] - lse_b[t]) <= 1e-5f * std::fabs(lse_b[t]) + 1e-6f);
            if (std::isfinite(ent_b[t])) CHECK(std::fabs(ent[t] - ent_b[t]) <= 1e-5f);
          }
          CHECK(std::isfinite(lse[1]) == (bad == -std::numeric_limits<float>::infinity()));
        }
      }
    }
  }
}

TEST_CASE("the AVX2 and AVX-512 targets compute the same bits", "[isa]") {
  if (grpokit::detail::cpu_isa() < host_isa::avx512) {
    WARN("no AVX-512 on this CPU: the two SIMD targets are not compared");
    return;
  }
  std::uint64_t seed = 101;
  for (std::int64_t V : {1, 7, 16, 33, 1024, 1025, 5003, 40009}) {
    check_same_bits<det<float>>(seed++, V);
    check_same_bits<det_pruned<float>>(seed++, V);
#if defined(GRPOKIT_HAS_CUDA_HALF)
    check_same_bits<det<__nv_bfloat16>>(seed++, V);
    check_same_bits<det_pruned<__half>>(seed++, V);
#endif
  }
}

#if defined(GRPOKIT_HOST_SIMD)
namespace {

template <class Rows>
void check_exp(const char* name) {
  std::vector<float> x, y;
  std::mt19937_64 rng(3);
  for (auto [lo, hi] : {std::pair{-104.0, 89.0}, std::pair{-1.0, 1.0}, std::pair{-20.0, 0.0}}) {
    std::uniform_real_distribution<double> u(lo, hi);
    for (int i = 0; i < 200000; ++i) x.push_back(static_cast<float>(u(rng)));
  }
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> special{0.f, -0.f, -inf, inf, -1000.f, 1000.f, 88.8f, 88.72283f, -87.33655f, -103.97f,
                                   -103.98f, 0x1.4cc98p+2f, nan, -nan};
  x.insert(x.end(), special.begin(), special.end());
  y.resize(x.size());
  Rows::exp_values(x.data(), y.data(), static_cast<std::int64_t>(x.size()));
  double worst = 0, worst_sub = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i])) {
      CHECK(std::isnan(y[i]));
      continue;
    }
    const long double e = std::exp(static_cast<long double>(x[i]));
    if (e >= static_cast<long double>(std::numeric_limits<float>::min()))
      worst = std::max(worst, ulp_error(y[i], e));
    else  // subnormal or zero: within one subnormal step
      worst_sub = std::max(worst_sub, static_cast<double>(std::fabs(y[i] - e) / std::numeric_limits<float>::denorm_min()));
  }
  INFO(name << ": worst " << worst << " ulp, subnormal " << worst_sub << " steps");
  CHECK(worst <= 1.0);  // the issue asks 2; an exhaustive run over [-104, 89] found 0.91 (at 5.1998)
  CHECK(worst_sub <= 1.0);
  CHECK(y[x.size() - special.size() + 0] == 1.f);
  CHECK(y[x.size() - special.size() + 2] == 0.f);
  CHECK(y[x.size() - special.size() + 3] == inf);
  CHECK(y[x.size() - special.size() + 4] == 0.f);
  CHECK(y[x.size() - special.size() + 5] == inf);
  CHECK(y[x.size() - special.size() + 6] == inf);
}

// Every 16-bit pattern loads as math::load does; floats (subnormal, halfway, overflowing) store as
// math::store does. NaN: NaN (the CPU's fp16 conversions quiet a signalling NaN).
template <class Rows, class S>
void check_conversions(const char* name) {
  std::vector<S> h(65536);
  for (std::uint32_t i = 0; i < 65536; ++i) h[i] = grpokit::detail::bit_cast<S>(static_cast<std::uint16_t>(i));
  std::vector<float> f(65536);
  Rows::load_values(h.data(), f.data(), 65536);
  std::size_t wrong = 0;
  for (std::uint32_t i = 0; i < 65536; ++i) {
    const float want = grpokit::math::load<float>(h[i]);
    wrong += std::isnan(want) ? !std::isnan(f[i]) : std::memcmp(&want, &f[i], 4) != 0;
  }
  std::mt19937_64 rng(5);
  std::uniform_int_distribution<std::uint32_t> bits;
  std::vector<float> x;
  for (int i = 0; i < 200000; ++i) {
    const std::uint32_t b = bits(rng);
    float v;
    std::memcpy(&v, &b, 4);
    x.push_back(v);
    // values on and next to the rounding halfway points of the 16-bit formats
    const std::uint32_t halfway = (b & 0xffff0000u) | 0x8000u, half_halfway = (b & 0xffffe000u) | 0x1000u;
    for (std::uint32_t c : {halfway, halfway + 1, halfway - 1, half_halfway, half_halfway + 1}) {
      std::memcpy(&v, &c, 4);
      x.push_back(v);
    }
  }
  std::vector<S> out(x.size());
  Rows::store_values(x.data(), out.data(), static_cast<std::int64_t>(x.size()));
  for (std::size_t i = 0; i < x.size(); ++i) {
    const S want = grpokit::math::store<S>(x[i]);
    wrong += std::isnan(x[i]) ? !std::isnan(grpokit::math::load<float>(out[i])) : bits16(want) != bits16(out[i]);
  }
  INFO(name);
  CHECK(wrong == 0);
}

template <class Rows>
void check_target(host_isa isa) {
  if (grpokit::detail::cpu_isa() < isa) {
    WARN("this CPU lacks " << grpokit::detail::isa_name(isa) << ": its kernels are not run");
    return;
  }
  check_exp<Rows>(grpokit::detail::isa_name(isa));
#if defined(GRPOKIT_HAS_CUDA_HALF)
  check_conversions<Rows, __nv_bfloat16>(grpokit::detail::isa_name(isa));
  check_conversions<Rows, __half>(grpokit::detail::isa_name(isa));
#endif
}

}  // namespace

TEST_CASE("the SIMD targets' exp is within 1 ulp and their conversions are math::load / store", "[isa]") {
  check_target<grpokit::detail::avx2::rows>(host_isa::avx2);
  check_target<grpokit::detail::avx512::rows>(host_isa::avx512);
}
#endif

TEST_CASE("GRPOKIT_HOST_ISA caps the target and use_isa selects one", "[isa]") {
  using namespace grpokit::detail;
  isa_guard guard;
  const char* saved = std::getenv("GRPOKIT_HOST_ISA");
  const std::string saved_value = saved != nullptr ? saved : "";
  ::setenv("GRPOKIT_HOST_ISA", "portable", 1);
  CHECK(environment_isa() == host_isa::portable);
  ::setenv("GRPOKIT_HOST_ISA", "avx2", 1);
  CHECK(environment_isa() == capped_isa(host_isa::avx2));
  ::setenv("GRPOKIT_HOST_ISA", "avx512", 1);
  CHECK(environment_isa() == cpu_isa());
  if (saved != nullptr)
    ::setenv("GRPOKIT_HOST_ISA", saved_value.c_str(), 1);
  else
    ::unsetenv("GRPOKIT_HOST_ISA");
  CHECK(use_isa(host_isa::portable) == host_isa::portable);
  CHECK(active_isa() == host_isa::portable);
  CHECK(use_isa(host_isa::avx512) == cpu_isa());
  CHECK(active_isa() == cpu_isa());
}
