// fused_linear_loss against the unfused path (reference GEMM in long double, then fused_loss) and
// against finite differences of the long-double reference loss for dhidden, dweight and dbias.
#include <limits>
#include <random>
#include <tuple>

#include "catch.hpp"
#include "support.hpp"

namespace {

struct linear_problem {
  ref::problem p;  // logits = hidden W^T + bias (long-double GEMM of the stored values)
  std::int64_t D = 0;
  std::vector<double> hidden, weight, bias;

  void refresh_logits() {
    for (std::int64_t t = 0; t < p.T; ++t)
      for (std::int64_t v = 0; v < p.V; ++v) {
        ref::ld acc = bias.empty() ? 0 : bias[v];
        for (std::int64_t d = 0; d < D; ++d) acc += ref::ld(hidden[t * D + d]) * weight[v * D + d];
        p.logits[t * p.V + v] = static_cast<double>(acc);
      }
  }
};

template <class S>
linear_problem make_linear(std::uint64_t seed, std::vector<std::int64_t> lengths, std::int64_t V, std::int64_t D,
                           bool with_bias, const grpokit::loss_config& cfg) {
  std::mt19937_64 rng(seed);
  linear_problem lp;
  lp.p = ref::make_problem(rng, lengths, V, 1.0);
  lp.D = D;
  std::normal_distribution<double> n(0, 1.0 / std::sqrt(static_cast<double>(D)));
  std::normal_distribution<double> h(0, 1.5);
  for (std::int64_t i = 0; i < lp.p.T * D; ++i) lp.hidden.push_back(h(rng));
  for (std::int64_t i = 0; i < V * D; ++i) lp.weight.push_back(n(rng));
  if (with_bias)
    for (std::int64_t v = 0; v < V; ++v) lp.bias.push_back(n(rng));
  lp.hidden = support::to_double(support::to_storage<S>(lp.hidden));
  lp.weight = support::to_double(support::to_storage<S>(lp.weight));
  lp.bias = support::to_double(support::to_storage<S>(lp.bias));
  lp.refresh_logits();
  std::vector<ref::ld> logp, ent;
  support::ref_rows(lp.p, std::vector<ref::ld>(lp.p.logits.begin(), lp.p.logits.end()), cfg, false, logp, ent);
  ref::add_policies(rng, lp.p, logp, 0.2);
  return lp;
}

template <class P>
struct linear_run {
  using S = grpokit::storage_t<P>;
  using R = grpokit::accum_t<P>;
  std::vector<S> hidden, weight, bias, dhidden;
  std::vector<R> dweight, dbias, logp;
  grpokit::loss_result result;
};

template <class P>
linear_run<P> run_linear(const linear_problem& lp, const grpokit::loss_config& cfg, std::int64_t chunk) {
  using S = grpokit::storage_t<P>;
  using R = grpokit::accum_t<P>;
  const auto& p = lp.p;
  linear_run<P> r;
  r.hidden = support::to_storage<S>(lp.hidden);
  r.weight = support::to_storage<S>(lp.weight);
  r.bias = support::to_storage<S>(lp.bias);
  r.dhidden.resize(r.hidden.size());
  r.dweight.assign(r.weight.size(), R(0));
  r.dbias.assign(lp.bias.size(), R(0));
  r.logp.resize(static_cast<std::size_t>(p.T));
  support::host_run<P> h;  // the batch inputs
  support::load_batch(h, p);
  const grpokit::linear_input<S, R> in{{r.hidden.data(), p.T, lp.D, lp.D}, {r.weight.data(), p.V, lp.D, lp.D},
                                       r.bias, p.targets, h.temperature};
  grpokit::linear_grads<S, R> g;
  g.dhidden = {r.dhidden.data(), p.T, lp.D, lp.D};
  g.dweight_acc = {r.dweight.data(), p.V, lp.D, lp.D};
  g.dbias = r.dbias;
  r.result = grpokit::host::fused_linear_loss<P>(in, h.batch(p), cfg, chunk, g, {r.logp, {}});
  return r;
}

grpokit::loss_config linear_config() {
  grpokit::loss_config c = grpokit::presets::grpo::config();
  c.kl_coef = 0.1;
  c.entropy_coef = 0.01;
  c.eps_high = 0.28;
  return c;
}

}  // namespace

TEST_CASE("fused_linear_loss equals GEMM then fused_loss, for every token chunk", "[linear]") {
  using P = grpokit::policy<grpokit::precision<double, double>, grpokit::chunk<16>>;
  const auto cfg = linear_config();
  const linear_problem lp = make_linear<double>(3, {5, 1, 7, 4}, 37, 9, true, cfg);
  // unfused: fused_loss on the reference logits
  const auto unfused = support::run_fused<P>(lp.p, cfg);
  const auto& p = lp.p;
  std::vector<double> dh(static_cast<std::size_t>(p.T * lp.D)), dw(static_cast<std::size_t>(p.V * lp.D)), db(p.V);
  for (std::int64_t t = 0; t < p.T; ++t)
    for (std::int64_t v = 0; v < p.V; ++v) {
      const ref::ld g = unfused.dlogits[t * p.V + v];
      db[v] += static_cast<double>(g);
      for (std::int64_t d = 0; d < lp.D; ++d) {
        dh[t * lp.D + d] += static_cast<double>(g * lp.weight[v * lp.D + d]);
        dw[v * lp.D + d] += static_cast<double>(g * lp.hidden[t * lp.D + d]);
      }
    }
  for (const bool blas : {true, false})
  for (std::int64_t chunk : {1, 3, 17, 1000}) {
    grpokit::detail::use_blas(blas);
    const auto r = run_linear<P>(lp, cfg, chunk);
    grpokit::detail::use_blas(true);
    INFO("token chunk " << chunk << ", CBLAS " << grpokit::detail::blas_in_use());
    CHECK(support::close(r.result.loss, unfused.result.loss, 1e-12, 1e-14));
    CHECK(r.result.metrics.tokens_kept == unfused.result.metrics.tokens_kept);
    for (std::size_t i = 0; i < dh.size(); ++i) CHECK(support::close(r.dhidden[i], dh[i], 1e-10, 1e-13));
    for (std::size_t i = 0; i < dw.size(); ++i) CHECK(support::close(r.dweight[i], dw[i], 1e-10, 1e-13));
    for (std::size_t i = 0; i < db.size(); ++i) CHECK(support::close(r.dbias[i], db[i], 1e-10, 1e-13));
    for (std::int64_t t = 0; t < p.T; ++t) CHECK(support::close(r.logp[t], unfused.logp[t], 1e-12, 1e-13));
  }
}

TEST_CASE("fused_linear_loss gradients match finite differences", "[linear][gradients]") {
  using P = grpokit::policy<grpokit::precision<double, double>, grpokit::chunk<8>, grpokit::mask::trust_region>;
  auto cfg = linear_config();
  cfg.trm_max_threshold = 0.5;
  cfg.agg = grpokit::aggregation::seq_mean_token_mean;
  linear_problem lp = make_linear<double>(8, {3, 4, 2}, 11, 5, true, cfg);
  lp.p.temperature = {0.7, 1.0, 1.3, 0.9, 1.1, 1.0, 0.8, 1.2, 1.0};
  const auto r = run_linear<P>(lp, cfg, 4);
  ref::mask_features mf;
  mf.trust_region = true;
  auto loss_at = [&](linear_problem& q) {
    q.refresh_logits();
    return support::reference_loss(q.p, cfg, mf).at_base().loss;
  };
  // detached quantities (masks, on-policy ratios) stay at the base point: the reference keeps
  // logp_old / rollout fixed, and TRM uses logp_old, so a central difference is exact here
  const ref::ld h = 1e-6L;
  auto fd = [&](std::vector<double>& x, std::size_t i) {
    linear_problem q = lp;
    std::vector<double>& y = (&x == &lp.hidden) ? q.hidden : (&x == &lp.weight) ? q.weight : q.bias;
    y[i] = static_cast<double>(x[i] + h);
    const ref::ld up = loss_at(q);
    y[i] = static_cast<double>(x[i] - h);
    const ref::ld down = loss_at(q);
    return static_cast<double>((up - down) / (2 * h));
  };
  for (std::size_t i = 0; i < lp.hidden.size(); ++i) CHECK(support::close(r.dhidden[i], fd(lp.hidden, i), 1e-5, 1e-8));
  for (std::size_t i = 0; i < lp.weight.size(); ++i) CHECK(support::close(r.dweight[i], fd(lp.weight, i), 1e-5, 1e-8));
  for (std::size_t i = 0; i < lp.bias.size(); ++i) CHECK(support::close(r.dbias[i], fd(lp.bias, i), 1e-5, 1e-8));
}

#if defined(GRPOKIT_HAS_CUDA_HALF)
TEST_CASE("bf16 fused_linear_loss stays within bf16 accuracy of the fp64 path", "[linear]") {
  auto cfg = linear_config();
  const linear_problem lp = make_linear<__nv_bfloat16>(12, {20, 9, 33}, 257, 64, false, cfg);
  const auto f64 = run_linear<grpokit::policy<grpokit::precision<double, double>>>(lp, cfg, 16);
  // the LM head converted to fp32 in panels of 15 rows (the last one 2), and in one panel
  const bool many_panels = GENERATE(true, false);
  const std::int64_t saved = grpokit::detail::linear_panel_elements();
  if (many_panels) grpokit::detail::linear_panel_elements() = 15 * 64;
  const auto bf = run_linear<grpokit::policy<grpokit::precision<__nv_bfloat16, float>>>(lp, cfg, 16);
  grpokit::detail::linear_panel_elements() = saved;
  INFO("panels of " << (many_panels ? 15 : 257) << " rows");
  CHECK(support::close(bf.result.loss, f64.result.loss, 1e-4, 1e-6));
  double scale = 0;
  for (double g : f64.dweight) scale = std::max(scale, std::fabs(g));
  for (std::size_t i = 0; i < f64.dweight.size(); ++i) CHECK(std::fabs(bf.dweight[i] - f64.dweight[i]) <= 2e-2 * scale);
}
#endif

namespace {

// C = beta C + op(A) op(B) by detail::gemm against a long-double product, on operands with row
// strides larger than their rows.
template <class Acc>
void check_gemm(grpokit::detail::gemm_form form, std::int64_t M, std::int64_t N, std::int64_t K, Acc beta,
                std::uint64_t seed) {
  using grpokit::detail::gemm_form;
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n(0, 1);
  const bool a_t = form == gemm_form::tn, b_t = form == gemm_form::nt;
  const std::int64_t a_rows = a_t ? K : M, a_cols = a_t ? M : K, b_rows = b_t ? N : K, b_cols = b_t ? K : N;
  const std::int64_t lda = a_cols + 3, ldb = b_cols + 1, ldc = N + 2;
  std::vector<Acc> A(static_cast<std::size_t>(a_rows * lda)), B(static_cast<std::size_t>(b_rows * ldb)),
      C(static_cast<std::size_t>(M * ldc));
  for (auto* v : {&A, &B, &C})
    for (auto& x : *v) x = static_cast<Acc>(n(rng));
  const std::vector<Acc> C0 = C;
  grpokit::detail::gemm(form, M, N, K, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
  double worst = 0;
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t j = 0; j < N; ++j) {
      ref::ld want = beta == Acc(0) ? 0 : ref::ld(beta) * C0[static_cast<std::size_t>(m * ldc + j)];
      ref::ld scale = std::fabs(want);
      for (std::int64_t k = 0; k < K; ++k) {
        const ref::ld a = a_t ? A[static_cast<std::size_t>(k * lda + m)] : A[static_cast<std::size_t>(m * lda + k)];
        const ref::ld b = b_t ? B[static_cast<std::size_t>(j * ldb + k)] : B[static_cast<std::size_t>(k * ldb + j)];
        want += a * b;
        scale += std::fabs(a * b);
      }
      const double err = static_cast<double>(std::fabs(C[static_cast<std::size_t>(m * ldc + j)] - want) /
                                             (scale * std::numeric_limits<Acc>::epsilon() + 1e-300));
      worst = std::max(worst, err);
    }
  INFO("form " << static_cast<int>(form) << " M " << M << " N " << N << " K " << K << " beta " << beta);
  CHECK(worst <= static_cast<double>(K + 2));  // the classic bound: K eps times the sum of |terms|
  // the columns beyond N of every row (the padding of ldc) are untouched
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t j = N; j < ldc; ++j)
      CHECK(C[static_cast<std::size_t>(m * ldc + j)] == C0[static_cast<std::size_t>(m * ldc + j)]);
}

}  // namespace

TEST_CASE("the host GEMMs (the CBLAS and the loops) match a long-double product", "[linear][gemm]") {
  using grpokit::detail::gemm_form;
  std::uint64_t seed = 1;
  for (const bool blas : {true, false}) {
    grpokit::detail::use_blas(blas);
    INFO("CBLAS " << grpokit::detail::blas_in_use());
    for (gemm_form form : {gemm_form::nt, gemm_form::nn, gemm_form::tn})
      for (auto [M, N, K] : {std::tuple<std::int64_t, std::int64_t, std::int64_t>{1, 1, 1}, {3, 70, 5}, {17, 65, 130},
                             {64, 1, 33}, {5, 129, 0}}) {
        check_gemm<float>(form, M, N, K, 0.f, seed++);
        check_gemm<float>(form, M, N, K, 1.f, seed++);
        check_gemm<double>(form, M, N, K, 1.0, seed++);
      }
  }
  grpokit::detail::use_blas(true);
}

TEST_CASE("dweight accumulates (tied embeddings), and bad shapes are named", "[linear][errors]") {
  using P = grpokit::policy<grpokit::precision<double, double>>;
  const auto cfg = linear_config();
  const linear_problem lp = make_linear<double>(5, {4, 3}, 13, 6, false, cfg);
  auto r = run_linear<P>(lp, cfg, 2);
  std::vector<double> hidden = lp.hidden, weight = lp.weight, dh(hidden.size());
  std::vector<double> dw = r.dweight;  // a buffer that already holds one gradient
  support::host_run<P> h;
  support::load_batch(h, lp.p);
  grpokit::linear_input<double, double> in{{hidden.data(), lp.p.T, 6, 6}, {weight.data(), 13, 6, 6}, {}, lp.p.targets, {}};
  grpokit::linear_grads<double, double> g;
  g.dhidden = {dh.data(), lp.p.T, 6, 6};
  g.dweight_acc = {dw.data(), 13, 6, 6};
  grpokit::host::fused_linear_loss<P>(in, h.batch(lp.p), cfg, 3, g);
  for (std::size_t i = 0; i < dw.size(); ++i) CHECK(dw[i] == Approx(2 * r.dweight[i]).margin(1e-15));
  grpokit::linear_input<double, double> bad = in;
  bad.weight.cols = 5;
  REQUIRE_ERROR((grpokit::host::fused_linear_loss<P>(bad, h.batch(lp.p), cfg, 3, g)), "weight: expected [V, 6]");
  REQUIRE_ERROR((grpokit::host::fused_linear_loss<P>(in, h.batch(lp.p), cfg, 0, g)), "token_chunk must be >= 1");
  std::vector<double> dw2(dw.size());
  g.dweight = {dw2.data(), 13, 6, 6};
  REQUIRE_ERROR((grpokit::host::fused_linear_loss<P>(in, h.batch(lp.p), cfg, 3, g)), "set exactly one of dweight");
}

TEST_CASE("fused_linear_loss lm_head_norms: per-rollout, per-group and batch norms of the LM-head gradient",
          "[linear][noise]") {
  using P = grpokit::policy<grpokit::precision<double, double>, grpokit::chunk<16>>;
  const auto cfg = linear_config();
  // an empty sequence first, in the middle and last; groups of 2, 3, 1 and 1 sequences
  const linear_problem lp = make_linear<double>(5, {0, 5, 1, 7, 0, 4, 0}, 23, 6, false, cfg);
  const auto& p = lp.p;
  const std::vector<std::int64_t> groups{0, 2, 5, 6, 7};
  const auto unfused = support::run_fused<P>(p, cfg);  // dlogits of the same loss (checked elsewhere)
  // the reference: M_s = sum over s's tokens of dlogits_t hidden_t^T, in long double
  using M = std::vector<ref::ld>;
  auto sq = [](const M& m) {
    ref::ld s = 0;
    for (ref::ld x : m) s += x * x;
    return s;
  };
  const std::int64_t S = p.S, B = 4, D = lp.D;
  std::vector<M> Ms(static_cast<std::size_t>(S), M(static_cast<std::size_t>(p.V * D), 0));
  for (std::int64_t s = 0; s < S; ++s)
    for (std::int64_t t = p.b.seq_offsets[s]; t < p.b.seq_offsets[s + 1]; ++t)
      for (std::int64_t v = 0; v < p.V; ++v)
        for (std::int64_t d = 0; d < D; ++d)
          Ms[s][v * D + d] += ref::ld(unfused.dlogits[t * p.V + v]) * lp.hidden[t * D + d];
  std::vector<ref::ld> want_rollout(S), want_group(B);
  M batch_mean(static_cast<std::size_t>(p.V * D), 0);
  for (std::int64_t g = 0; g < B; ++g) {
    const ref::ld n = static_cast<ref::ld>(groups[g + 1] - groups[g]);
    M mean(static_cast<std::size_t>(p.V * D), 0);
    for (std::int64_t s = groups[g]; s < groups[g + 1]; ++s) {
      M gs = Ms[s];
      for (auto& x : gs) x *= S;  // g_s = S M_s
      want_rollout[s] = sq(gs);
      for (std::size_t i = 0; i < mean.size(); ++i) mean[i] += gs[i] / n;
    }
    want_group[g] = sq(mean);
    for (std::size_t i = 0; i < mean.size(); ++i) batch_mean[i] += mean[i] / B;
  }
  const ref::ld want_batch = sq(batch_mean);
  const auto plain = run_linear<P>(lp, cfg, 4);
  for (const std::int64_t chunk : {1, 3, 4, 17, 1000}) {
    linear_run<P> r;
    r.hidden = lp.hidden;
    r.weight = lp.weight;
    r.dhidden.resize(r.hidden.size());
    r.dweight.assign(r.weight.size(), 0.0);
    support::host_run<P> h;
    support::load_batch(h, p);
    grpokit::linear_grads<double, double> g;
    g.dhidden = {r.dhidden.data(), p.T, D, D};
    g.dweight_acc = {r.dweight.data(), p.V, D, D};
    std::vector<double> rollout(static_cast<std::size_t>(S), -1), group(static_cast<std::size_t>(B), -1);
    double batch = -1;
    r.result = grpokit::host::fused_linear_loss<P>(
        {{r.hidden.data(), p.T, D, D}, {r.weight.data(), p.V, D, D}, {}, p.targets, h.temperature}, h.batch(p), cfg,
        chunk, g, {}, {groups, rollout, group, &batch});
    INFO("token chunk " << chunk);
    for (std::int64_t s = 0; s < S; ++s) CHECK(support::close(rollout[s], static_cast<double>(want_rollout[s]), 1e-10, 1e-14));
    CHECK(rollout[0] == 0.0);  // the empty sequences
    CHECK(rollout[4] == 0.0);
    for (std::int64_t k = 0; k < B; ++k) CHECK(support::close(group[k], static_cast<double>(want_group[k]), 1e-10, 1e-14));
    CHECK(support::close(batch, static_cast<double>(want_batch), 1e-10, 1e-14));
    // the gradient itself is untouched by the measurement
    if (chunk == 4) CHECK(support::same_bits(r.dweight, plain.dweight));
  }
  // with equal groups the batch mean is the batch gradient: |dweight|^2
  {
    const std::vector<std::int64_t> pairs{0, 2, 4, 6, 7};  // 4 groups
    const std::vector<std::int64_t> equal{0, 7};                    // one group of all
    std::vector<double> rollout(static_cast<std::size_t>(S)), group(1), dweight(lp.weight.size()),
        dhidden(lp.hidden.size());
    double batch = 0;
    support::host_run<P> h;
    support::load_batch(h, p);
    grpokit::linear_grads<double, double> g;
    g.dweight_acc = {dweight.data(), p.V, D, D};
    grpokit::host::fused_linear_loss<P>({{lp.hidden.data(), p.T, D, D}, {lp.weight.data(), p.V, D, D}, {}, p.targets,
                                         h.temperature},
                                        h.batch(p), cfg, 5, g, {}, {equal, rollout, group, &batch});
    double w2 = 0;
    for (double x : dweight) w2 += x * x;
    CHECK(support::close(batch, w2, 1e-12, 1e-16));
    CHECK(support::close(group[0], w2, 1e-12, 1e-16));
    std::vector<double> short_group(2);
    REQUIRE_ERROR((grpokit::host::fused_linear_loss<P>({{lp.hidden.data(), p.T, D, D}, {lp.weight.data(), p.V, D, D},
                                                        {}, p.targets, h.temperature},
                                                       h.batch(p), cfg, 5, g, {}, {pairs, rollout, short_group, &batch})),
                  "lm_head_norms.group_mean_sq: expected 4 elements, got 2");
    REQUIRE_ERROR((grpokit::host::fused_linear_loss<P>({{lp.hidden.data(), p.T, D, D}, {lp.weight.data(), p.V, D, D},
                                                        {}, p.targets, h.temperature},
                                                       h.batch(p), cfg, 5, g, {}, {equal, rollout, group, nullptr})),
                  "set rollout_sq, group_mean_sq and batch_mean_sq together");
  }
}

TEST_CASE("fused_linear_loss lm_head_norms of an empty batch are 0", "[linear][noise]") {
  using P = grpokit::policy<grpokit::precision<double, double>, grpokit::chunk<16>>;
  const std::int64_t V = 5, D = 3;
  std::vector<double> weight(V * D, 0.5), dweight(V * D);
  const std::vector<std::int64_t> offsets{0}, groups{0};
  grpokit::rollout_batch<double> batch;
  batch.seq_offsets = offsets;
  grpokit::linear_grads<double, double> g;
  g.dweight = {dweight.data(), V, D, D};
  double b = -1;
  grpokit::loss_config cfg;
  cfg.kl = grpokit::kl_estimator::none;
  grpokit::host::fused_linear_loss<P>({{nullptr, 0, D, D}, {weight.data(), V, D, D}, {}, {}, {}}, batch, cfg, 4, g, {},
                                      {groups, {}, {}, &b});
  CHECK(b == 0.0);
}
