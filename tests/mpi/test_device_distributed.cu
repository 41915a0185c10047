// The device entry points over a layout (device/distributed.cuh) under MPI on a DP x TP grid
// (GRPOKIT_TP ranks per vocabulary group, the rest data parallel), each rank on the device (a GPU,
// or the simulated GPU: one simulator per process), through staged_communicator over
// mpi_communicator. Every rank builds the same global problem (same seed); one rank runs the
// one-process device call on the whole batch and sends its outputs to the others (the references of
// a test spread over the ranks); every rank runs its share of the distributed call (random sequence
// cuts, empty DP shares included; column cuts on the chunk grid, non-empty), and compares: the loss
// and metrics bitwise under batch_invariant and within rounding otherwise; dlogits, logp and
// entropy of its own block bitwise (the tiles merge in the unsharded order, integer normalisers),
// for every reduction order; logits_backward alone the same. token_logprobs off the chunk grid:
// within rounding of one process, bitwise the host's vocabulary-parallel call. policy_loss alone
// runs on a stream of its own. fused_linear_loss (with a reference GEMM: the simulator has no
// cuBLAS) against the one-process call, the gradients the caller sums checked summed. A rejected
// input on one rank, or a data error found on the device of one rank, throws on every rank. Exit
// 77 (skipped) without a device (tests/mpi/main.cpp with GRPOKIT_MPI_DEVICE_TEST). Tags for the
// simulated grids (tests/CMakeLists.txt): [data], a case whose only parallel axis is the data one;
// [vocab], a case whose point is the vocabulary split (its data-parallel merges are those of
// fused_loss).
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <type_traits>
#include <vector>

#include <grpokit/comm/mpi.hpp>
#include <grpokit/comm/staged.cuh>
#include <grpokit/device/distributed.cuh>
#include <grpokit/host/vocab_parallel.hpp>

#include "../catch.hpp"
#include "../device/device_support.cuh"
#include "../support.hpp"
#include "grid.hpp"

namespace {

using device_support::buffer;
using device_support::device_problem;
using device_support::reference_gemm;
using grpokit::loss_config;

using mpi_grid::grid;
using mpi_grid::the_grid;

using staged = grpokit::staged_communicator<grpokit::mpi_communicator>;
auto layout() {
  const grid& g = the_grid();
  return grpokit::data_and_vocab_parallel(staged(grpokit::mpi_communicator(g.dp)),
                                          staged(grpokit::mpi_communicator(g.tp)));
}

ref::problem global_problem(std::uint64_t seed, std::int64_t V) { return support::packed_problem(seed, V, 9, 7); }

// Sequences [s0, s1) and columns [c0, c1) of p as a problem of its own (the rank's share; the
// targets stay global ids).
ref::problem share_of(const ref::problem& p, std::int64_t s0, std::int64_t s1, std::int64_t c0, std::int64_t c1) {
  ref::problem q;
  const std::int64_t t0 = p.b.seq_offsets[s0], t1 = p.b.seq_offsets[s1];
  q.V = c1 - c0;
  q.T = t1 - t0;
  q.S = s1 - s0;
  for (std::int64_t t = t0; t < t1; ++t)
    q.logits.insert(q.logits.end(), p.logits.begin() + t * p.V + c0, p.logits.begin() + t * p.V + c1);
  q.targets.assign(p.targets.begin() + t0, p.targets.begin() + t1);
  auto tokens = [&](const auto& v) { return v.empty() ? v : std::decay_t<decltype(v)>(v.begin() + t0, v.begin() + t1); };
  auto seqs = [&](const auto& v) { return v.empty() ? v : std::decay_t<decltype(v)>(v.begin() + s0, v.begin() + s1); };
  q.temperature = tokens(p.temperature);
  for (std::int64_t s = s0; s <= s1; ++s) q.b.seq_offsets.push_back(p.b.seq_offsets[s] - t0);
  q.b.adv = seqs(p.b.adv);
  q.b.logp_old = tokens(p.b.logp_old);
  q.b.logp_ref = tokens(p.b.logp_ref);
  q.b.logp_rollout = tokens(p.b.logp_rollout);
  q.b.token_mask = tokens(p.b.token_mask);
  q.b.seq_mask = seqs(p.b.seq_mask);
  q.b.positive = seqs(p.b.positive);
  return q;
}

// The sequence cuts of the DP ranks (the same on every rank): random, empty shares allowed.
std::vector<std::int64_t> cuts(std::uint64_t seed, std::int64_t S, int ranks) {
  std::mt19937_64 rng(seed * 7919);
  std::uniform_int_distribution<std::int64_t> d(0, S);
  std::vector<std::int64_t> c{0};
  for (int i = 0; i + 1 < ranks; ++i) c.push_back(d(rng));
  std::sort(c.begin() + 1, c.end());
  c.push_back(S);
  return c;
}

// The column cuts of the TP ranks: distinct interior multiples of `align` (non-empty slices).
std::vector<std::int64_t> column_cuts(std::uint64_t seed, std::int64_t V, int ranks, std::int64_t align) {
  std::mt19937_64 rng(seed * 104729);
  std::vector<std::int64_t> all;
  for (std::int64_t k = align; k < V; k += align) all.push_back(k);
  std::shuffle(all.begin(), all.end(), rng);
  std::vector<std::int64_t> c(all.begin(), all.begin() + (ranks - 1));
  c.push_back(0);
  c.push_back(V);
  std::sort(c.begin(), c.end());
  return c;
}

// This rank's share: sequences [s0, s1) of the DP cuts, columns [c0, c1) of the TP cuts.
struct share {
  std::int64_t s0, s1, c0, c1, t0;
  std::int64_t most_tokens = 0, most_seqs = 0, most_columns = 0;  // the plan: the largest share
};
share my_share(const ref::problem& p, std::uint64_t seed, std::int64_t column_align) {
  const grid& g = the_grid();
  const auto sc = cuts(seed, p.S, g.dp_size);
  const auto cc = column_cuts(seed, p.V, g.tp_size, column_align);
  share sh{sc[g.dp_rank], sc[g.dp_rank + 1], cc[g.tp_rank], cc[g.tp_rank + 1], p.b.seq_offsets[sc[g.dp_rank]]};
  for (int r = 0; r < g.dp_size; ++r) {
    sh.most_tokens = std::max(sh.most_tokens, p.b.seq_offsets[sc[r + 1]] - p.b.seq_offsets[sc[r]]);
    sh.most_seqs = std::max(sh.most_seqs, sc[r + 1] - sc[r]);
  }
  for (int r = 0; r < g.tp_size; ++r) sh.most_columns = std::max(sh.most_columns, cc[r + 1] - cc[r]);
  return sh;
}

// The block [rows of the share) x [c0, c1) of a T x V matrix.
template <class T>
std::vector<T> block(const std::vector<T>& m, std::int64_t V, std::int64_t t0, std::int64_t rows, std::int64_t c0,
                     std::int64_t c1) {
  std::vector<T> out;
  for (std::int64_t t = t0; t < t0 + rows; ++t) out.insert(out.end(), m.begin() + t * V + c0, m.begin() + t * V + c1);
  return out;
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b, std::int64_t offset) {
  return std::memcmp(a.data(), b.data() + offset, a.size() * sizeof(T)) == 0;
}
bool close(double a, double b, double tol) { return std::fabs(a - b) <= tol * (1 + std::fabs(b)); }

// The one-process references of a test: reference i is computed on rank i % size alone and sent
// to every rank (every rank computing each one would cost the grid's size times over on the
// simulator). A reference lists its fields with each(f): trivially copyable values and vectors.
template <class T>
void send_from(int root, T& v) {
  static_assert(std::is_trivially_copyable<T>::value, "a reference field is sent as bytes");
  MPI_Bcast(&v, static_cast<int>(sizeof(T)), MPI_BYTE, root, MPI_COMM_WORLD);
}
template <class T>
void send_from(int root, std::vector<T>& v) {
  static_assert(std::is_trivially_copyable<T>::value, "a reference field is sent as bytes");
  std::uint64_t n = v.size();
  send_from(root, n);
  v.resize(static_cast<std::size_t>(n));
  MPI_Bcast(v.data(), static_cast<int>(n * sizeof(T)), MPI_BYTE, root, MPI_COMM_WORLD);
}
template <class Ref, class Make>
std::vector<Ref> references(int n, Make make) {
  const grid& g = the_grid();
  std::vector<Ref> out(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i)
    if (i % g.size == g.rank) out[i] = make(i);
  for (int i = 0; i < n; ++i) out[i].each([&](auto& field) { send_from(i % g.size, field); });
  return out;
}

// fused_loss on the whole batch (its outputs), then token_logprobs and logits_backward alone from
// made-up gradients of the log-probs and entropies.
template <class P>
struct fused_reference {
  using S = grpokit::storage_t<P>;
  using R = grpokit::accum_t<P>;
  grpokit::loss_result result{};
  std::vector<S> dlogits, dlogits_backward;
  std::vector<R> logp, entropy, lse, entropy_rows;
  template <class F>
  void each(F f) {
    f(result), f(dlogits), f(dlogits_backward), f(logp), f(entropy), f(lse), f(entropy_rows);
  }
};
// the made-up gradients of logits_backward
template <class R>
std::vector<R> made_up_dlogp(std::int64_t T) {
  std::vector<R> v(static_cast<std::size_t>(T));
  for (std::int64_t t = 0; t < T; ++t) v[t] = R(t % 3 == 0 ? 0 : 0.5 - 0.1 * t);
  return v;
}
template <class R>
std::vector<R> made_up_dentropy(std::int64_t T) {
  std::vector<R> v(static_cast<std::size_t>(T));
  for (std::int64_t t = 0; t < T; ++t) v[t] = R(t % 2 == 0 ? 0.03 : 0);
  return v;
}
template <class P>
fused_reference<P> fused_on_one_process(const ref::problem& p, const loss_config& cfg) {
  using S = grpokit::storage_t<P>;
  using R = grpokit::accum_t<P>;
  fused_reference<P> out;
  device_problem<P> whole(p);
  buffer<S> dwhole(static_cast<std::size_t>(p.T * p.V));
  buffer<R> logp_w(p.T), ent_w(p.T), lse_w(p.T);
  out.result = grpokit::device::fused_loss<P>(whole.input(), whole.batch(), cfg, {dwhole.data(), p.T, p.V, p.V},
                                              whole.ws(), whole.ws_bytes(), 0, {logp_w.span(), ent_w.span()});
  out.dlogits = dwhole.host();
  out.logp = logp_w.host();
  out.entropy = ent_w.host();
  const buffer<R> dlogp_w(made_up_dlogp<R>(p.T)), dent_w(made_up_dentropy<R>(p.T));
  grpokit::device::token_logprobs<P>(whole.input(), cfg, {logp_w.span(), ent_w.span(), lse_w.span()}, whole.ws(),
                                     whole.ws_bytes());
  grpokit::device::logits_backward<P>(whole.input(), {lse_w.cspan(), ent_w.cspan(), dlogp_w.cspan(), dent_w.cspan()},
                                      cfg, {dwhole.data(), p.T, p.V, p.V}, whole.ws(), whole.ws_bytes());
  out.lse = lse_w.host();
  out.entropy_rows = ent_w.host();
  out.dlogits_backward = dwhole.host();
  return out;
}

// fused_loss of P on the whole batch (one process) and on this rank's share (data parallel).
template <class P>
void compare_fused(bool bitwise) {
  using S = grpokit::storage_t<P>;
  using R = grpokit::accum_t<P>;
  static_assert(std::is_same<R, float>::value, "the test keeps float outputs");
  const grid& g = the_grid();
  std::vector<loss_config> cfgs(3);
  cfgs[0].kl = grpokit::kl_estimator::k3;
  cfgs[0].kl_coef = 0.05;
  cfgs[0].entropy_coef = 0.01;
  cfgs[0].is = grpokit::is_correction::token_truncate;
  cfgs[0].is_batch_normalize = true;  // the batch pass over the ranks
  cfgs[0].positive_nll_coef = 0.2;
  cfgs[1].obj = grpokit::objective::gspo;
  cfgs[1].agg = grpokit::aggregation::seq_mean_token_mean;
  cfgs[1].top_entropy_quantile = 0.3;  // the selection's histograms gathered over the ranks
  cfgs[1].m2po_threshold = 0.05;  // and M2PO's, before the summaries (GSPO's ratios)
  cfgs[2].agg = grpokit::aggregation::token_sum;
  cfgs[2].obj = grpokit::objective::kl_cov;  // KL-Cov's top-k over the ranks, ties by position
  cfgs[2].kl_cov_ratio = 0.2;
  cfgs[2].kl = grpokit::kl_estimator::k2;
  cfgs[2].kl_coef = 0.1;
  cfgs[2].prune_rho = 1e-2;
  auto seed_of = [](std::size_t i) { return static_cast<std::uint64_t>(501 + i); };
  auto problem_of = [&](std::size_t i) { return global_problem(seed_of(i), 3 * 32 + 5); };
  const auto refs = references<fused_reference<P>>(static_cast<int>(cfgs.size()), [&](int i) {
    return fused_on_one_process<P>(problem_of(static_cast<std::size_t>(i)), cfgs[static_cast<std::size_t>(i)]);
  });
  for (std::size_t i = 0; i < cfgs.size(); ++i) {
    const loss_config& cfg = cfgs[i];
    const std::uint64_t seed = seed_of(i);
    INFO("policy " << support::describe<P>() << ", seed " << seed << ", grid dp " << g.dp_size << " x tp "
                   << g.tp_size << ", rank " << g.rank);
    const ref::problem p = problem_of(i);
    const share sh = my_share(p, seed, 32);
    const ref::problem q = share_of(p, sh.s0, sh.s1, sh.c0, sh.c1);
    const fused_reference<P>& whole = refs[i];
    const auto& want = whole.result;

    const grpokit::device::shape planned{sh.most_tokens, sh.most_columns, sh.most_seqs};
    const auto lay = layout();
    buffer<unsigned char> ws(grpokit::device::workspace_bytes<P>(planned, lay));
    device_problem<P> mine(q);
    buffer<S> dmine(static_cast<std::size_t>(q.T * q.V));
    buffer<R> logp_m(q.T), ent_m(q.T);
    const auto got = grpokit::device::fused_loss<P>(mine.input(), mine.batch(), cfg, {dmine.data(), q.T, q.V, q.V},
                                                    ws.data(), ws.size(), planned, lay, 0,
                                                    {logp_m.span(), ent_m.span()});
    if (bitwise) {
      CHECK(std::memcmp(&got, &want, sizeof(got)) == 0);
    } else {
      CHECK(close(got.loss, want.loss, 1e-5));
      CHECK(close(got.metrics.loss_pg, want.metrics.loss_pg, 1e-5));
      CHECK(close(got.metrics.entropy_mean, want.metrics.entropy_mean, 1e-5));
      CHECK(close(got.metrics.kl_ref, want.metrics.kl_ref, 1e-5));
      CHECK(close(got.metrics.loss_nll, want.metrics.loss_nll, 1e-5));
      CHECK(close(got.metrics.is_batch_norm_factor, want.metrics.is_batch_norm_factor, 1e-5));
    }
    CHECK((cfg.positive_nll_coef == 0 || want.metrics.loss_nll != 0));  // the NLL bites
    CHECK((cfg.top_entropy_quantile == 1 || want.metrics.masked_tokens_entropy > 0));  // so does the entropy mask
    CHECK((cfg.m2po_threshold == INFINITY || want.metrics.masked_tokens_m2po > 0));  // and M2PO
    CHECK(got.metrics.masked_tokens_m2po == want.metrics.masked_tokens_m2po);
    CHECK(got.metrics.masked_tokens_entropy == want.metrics.masked_tokens_entropy);
    CHECK(got.metrics.entropy_threshold == want.metrics.entropy_threshold);  // bitwise entropies: the same quantile
    CHECK(got.metrics.cov_tokens == want.metrics.cov_tokens);
    CHECK((cfg.obj != grpokit::objective::kl_cov || want.metrics.cov_tokens > 0));
    CHECK(got.metrics.tokens == want.metrics.tokens);
    CHECK(got.metrics.seqs == want.metrics.seqs);
    CHECK(got.metrics.tokens_kept == want.metrics.tokens_kept);
    CHECK(got.metrics.masked_tokens_vocab_prune == want.metrics.masked_tokens_vocab_prune);
    // the rows: the tiles merged in the unsharded order (chunk-aligned slices), integer normalisers
    CHECK(same_bits(logp_m.host(), whole.logp, sh.t0));
    CHECK(same_bits(ent_m.host(), whole.entropy, sh.t0));
    // ... except where the IS weights' batch mean is combined in rank order (reduction::fast)
    const auto dwant = block(whole.dlogits, p.V, sh.t0, q.T, sh.c0, sh.c1);
    if (bitwise || !cfg.is_batch_normalize) {
      CHECK(same_bits(dmine.host(), dwant, 0));
    } else {
      const auto dgot = dmine.host();
      std::int64_t bad = 0;
      for (std::size_t i = 0; i < dgot.size(); ++i)
        bad += !close(grpokit::math::load<double>(dgot[i]), grpokit::math::load<double>(dwant[i]), 1e-5);
      CHECK(bad == 0);
    }

    // logits_backward alone over the slices, from the one-process lse / entropy and made-up gradients
    auto rows = [&](const std::vector<R>& v) { return std::vector<R>(v.begin() + sh.t0, v.begin() + sh.t0 + q.T); };
    const buffer<R> lse_m(rows(whole.lse)), ent_m2(rows(whole.entropy_rows)),
        dlogp_m(rows(made_up_dlogp<R>(p.T))), dent_m(rows(made_up_dentropy<R>(p.T)));
    grpokit::device::logits_backward<P>(mine.input(), {lse_m.cspan(), ent_m2.cspan(), dlogp_m.cspan(), dent_m.cspan()},
                                        cfg, {dmine.data(), q.T, q.V, q.V}, ws.data(), ws.size(), planned, lay);
    grpokit::device::throw_if_error(grpokit::device::read_status(ws.data(), 0));
    CHECK(same_bits(dmine.host(), block(whole.dlogits_backward, p.V, sh.t0, q.T, sh.c0, sh.c1), 0));
  }
}

// token_logprobs over the TP slices off the chunk grid: each slice's tiles merged into its partial,
// the slices in rank order (within rounding of one process).
template <class P>
void compare_logprobs_off_grid() {
  using R = grpokit::accum_t<P>;
  const grid& g = the_grid();
  loss_config cfg{};
  const ref::problem p = global_problem(4242, 3 * 32 + 5);
  const share sh = my_share(p, 4242, 1);
  const ref::problem q = share_of(p, 0, p.S, sh.c0, sh.c1);  // every DP rank: the whole batch
  device_problem<P> whole(p), mine(q);
  buffer<R> logp_w(p.T), ent_w(p.T), lse_w(p.T), logp_m(p.T), ent_m(p.T), lse_m(p.T);
  grpokit::device::token_logprobs<P>(whole.input(), cfg, {logp_w.span(), ent_w.span(), lse_w.span()}, whole.ws(),
                                     whole.ws_bytes());
  const grpokit::device::shape planned{p.T, sh.most_columns, 0};
  const auto lay = layout();
  buffer<unsigned char> ws(grpokit::device::workspace_bytes<P>(planned, lay));
  grpokit::device::token_logprobs<P>(mine.input(), cfg, {logp_m.span(), ent_m.span(), lse_m.span()}, ws.data(),
                                     ws.size(), planned, lay);
  grpokit::device::throw_if_error(grpokit::device::read_status(ws.data(), 0));
  INFO("grid dp " << g.dp_size << " x tp " << g.tp_size << ", rank " << g.rank << ", columns [" << sh.c0 << ", "
                  << sh.c1 << ")");
  const auto a = logp_m.host(), b = logp_w.host(), c = lse_m.host(), d = lse_w.host(), e = ent_m.host(),
             f = ent_w.host();
  std::int64_t bad = 0;
  for (std::int64_t t = 0; t < p.T; ++t)
    bad += !close(a[t], b[t], 1e-5) || !close(c[t], d[t], 1e-5) || !close(e[t], f[t], 1e-5);
  CHECK(bad == 0);
  // the host's order (each slice's tiles, then the slices in rank order): bitwise the host's
  // vocabulary-parallel call on the same share under batch_invariant
  if (P::order == grpokit::reduction_order::batch_invariant) {
    const auto host_logits = support::to_storage<grpokit::storage_t<P>>(q.logits);
    const auto host_temperature = support::cast<R>(q.temperature);
    std::vector<R> hl(static_cast<std::size_t>(p.T)), he(hl.size()), hs(hl.size());
    const auto host_layout = grpokit::data_and_vocab_parallel(grpokit::mpi_communicator(g.dp),
                                                              grpokit::mpi_communicator(g.tp));
    grpokit::host::token_logprobs<P>({{host_logits.data(), q.T, q.V, q.V}, q.targets, host_temperature}, cfg,
                                     {hl, he, hs}, host_layout);
    CHECK(support::same_bits(a, hl));
    CHECK(support::same_bits(c, hs));
    CHECK(support::same_bits(e, he));
  }
}

// The sum over a communicator's ranks of a float array (in double), for the gradients a caller
// reduces itself (dhidden over TP, dweight and dbias over DP).
std::vector<double> sum_over(MPI_Comm comm, const std::vector<float>& mine) {
  std::vector<double> in(mine.begin(), mine.end()), out(in.size());
  MPI_Allreduce(in.data(), out.data(), static_cast<int>(in.size()), MPI_DOUBLE, MPI_SUM, comm);
  return out;
}
// a == b bitwise when `exact`, otherwise within tol of the largest |b|
bool agree(const std::vector<double>& a, const std::vector<float>& b, bool exact, double tol) {
  double scale = 0;
  for (float x : b) scale = std::max(scale, std::fabs(static_cast<double>(x)));
  for (std::size_t i = 0; i < a.size(); ++i)
    if (exact ? static_cast<float>(a[i]) != b[i] : std::fabs(a[i] - b[i]) > tol * (scale + 1e-30)) return false;
  return a.size() == b.size();
}

// The LM head of a test: hidden [T, D], weight [V, D] and a bias, and their rows.
struct lm_head {
  std::int64_t D;
  std::vector<double> hidden, weight, bias;
  lm_head(std::uint64_t seed, std::int64_t T, std::int64_t V, std::int64_t D_) : D(D_) {
    std::mt19937_64 rng(seed * 31);
    std::normal_distribution<double> w(0, 1 / std::sqrt(static_cast<double>(D))), h(0, 1.5), b(0, 0.2);
    for (std::int64_t i = 0; i < T * D; ++i) hidden.push_back(h(rng));
    for (std::int64_t i = 0; i < V * D; ++i) weight.push_back(w(rng));
    for (std::int64_t i = 0; i < V; ++i) bias.push_back(b(rng));
  }
};
std::vector<double> rows_of(const std::vector<double>& m, std::int64_t width, std::int64_t r0, std::int64_t r1) {
  return std::vector<double>(m.begin() + r0 * width, m.begin() + r1 * width);
}

// One device fused_linear_loss run with the reference GEMM (everything but cuBLAS, which the
// simulated GPU cannot run): the rows of the head given, gradients from zero.
template <class P>
struct linear_run {
  using S = grpokit::storage_t<P>;
  std::int64_t T, V, D;
  buffer<S> hidden, weight, bias, dhidden;
  buffer<float> dweight, dbias, logp, entropy;
  linear_run(const std::vector<double>& h, const std::vector<double>& w, const std::vector<double>& b, std::int64_t D_,
             std::int64_t dhidden_rows = -1)
      : T(static_cast<std::int64_t>(h.size()) / D_), V(static_cast<std::int64_t>(b.size())), D(D_),
        hidden(support::to_storage<S>(h)), weight(support::to_storage<S>(w)), bias(support::to_storage<S>(b)),
        dhidden(static_cast<std::size_t>((dhidden_rows < 0 ? T : dhidden_rows) * D)), dweight(w.size()), dbias(b.size()),
        logp(T), entropy(T) {
    GRPOKIT_CUDA_CHECK(cudaMemset(dweight.data(), 0, w.size() * sizeof(float)));
    GRPOKIT_CUDA_CHECK(cudaMemset(dbias.data(), 0, b.size() * sizeof(float)));
  }
  grpokit::linear_input<S, float> input(const device_problem<P>& d) const {
    return {{hidden.data(), T, D, D}, {weight.data(), V, D, D}, bias.cspan(), d.targets.cspan(), {}};
  }
  grpokit::linear_grads<S, float> grads() const {
    grpokit::linear_grads<S, float> g;
    g.dhidden = {dhidden.data(), dhidden.size() / D, D, D};
    g.dweight_acc = {dweight.data(), V, D, D};
    g.dbias = dbias.span();
    return g;
  }
  grpokit::fused_outputs<float> extra() const { return {logp.span(), entropy.span()}; }
};

// fused_linear_loss over the layout (the rank's sequences, rows of the head on the chunk grid)
// against the one-process device call on the whole batch: the loss and metrics as compare_fused,
// logp and entropy of the rank's rows bitwise (the same logits: every one is its own dot product),
// dhidden summed over the TP ranks, dweight and dbias over the DP ranks against the whole batch's:
// bitwise with one rank on that axis (the same GEMMs of the same bits), within rounding otherwise.
// `one` and `many` run the one-process and the distributed call with `gemm`: reference_gemm, or
// cuBLAS (then the logits themselves may differ in rounding between the shapes, and every check
// is within rounding).
template <class Gemm>
struct linear_calls {
  Gemm gemm;
  template <class P>
  grpokit::loss_result one(const grpokit::linear_input<grpokit::storage_t<P>, float>& in,
                           const grpokit::rollout_batch<float>& batch, const loss_config& cfg, std::int64_t chunk,
                           const grpokit::linear_grads<grpokit::storage_t<P>, float>& grads, void* ws,
                           std::size_t bytes, const grpokit::fused_outputs<float>& extra) const {
    grpokit::detail::fused_linear_loss_with<P>(gemm, in, batch, cfg, chunk, grads, ws, bytes, 0, extra);
    return grpokit::device::read_loss_result(ws, 0);
  }
  template <class P, class Layout>
  grpokit::loss_result many(const grpokit::linear_input<grpokit::storage_t<P>, float>& in,
                            const grpokit::rollout_batch<float>& batch, const loss_config& cfg, std::int64_t chunk,
                            const grpokit::linear_grads<grpokit::storage_t<P>, float>& grads, void* ws,
                            std::size_t bytes, const grpokit::device::shape& planned, const Layout& lay,
                            const grpokit::fused_outputs<float>& extra) const {
    grpokit::detail::fused_linear_loss_with<P>(gemm, in, batch, cfg, chunk, grads, ws, bytes, planned, lay, 0, extra);
    return grpokit::device::read_loss_result(ws, 0);
  }
};

// the one-process outputs of fused_linear_loss
template <class S>
struct linear_reference {
  grpokit::loss_result result{};
  std::vector<float> logp, entropy, dweight, dbias;
  std::vector<S> dhidden;
  template <class F>
  void each(F f) {
    f(result), f(logp), f(entropy), f(dweight), f(dbias), f(dhidden);
  }
};

template <class P, class Calls>
void compare_linear(const Calls& calls, bool bitwise, const loss_config& cfg, std::uint64_t seed,
                    bool with_rejection) {
  const bool exact = std::is_same<Calls, linear_calls<reference_gemm>>::value;
  using S = grpokit::storage_t<P>;
  static_assert(std::is_same<grpokit::accum_t<P>, float>::value, "the test keeps float outputs");
  const grid& g = the_grid();
  const std::int64_t V = 3 * 32 + 5, D = 6, token_chunk = 7;
  INFO("policy " << support::describe<P>() << ", seed " << seed << ", grid dp " << g.dp_size << " x tp "
                 << g.tp_size << ", rank " << g.rank);
  const ref::problem p = global_problem(seed, V);
  const share sh = my_share(p, seed, 32);
  const ref::problem q = share_of(p, sh.s0, sh.s1, sh.c0, sh.c1);
  const lm_head head(seed, p.T, V, D);

  const linear_reference<S> w = references<linear_reference<S>>(1, [&](int) {
    device_problem<P> whole(p);
    linear_run<P> run(head.hidden, head.weight, head.bias, D);
    std::size_t bytes = grpokit::device::linear_workspace_bytes<P>({p.T, V, p.S}, token_chunk);
    buffer<unsigned char> ws1(bytes);
    linear_reference<S> r;
    r.result = calls.template one<P>(run.input(whole), whole.batch(), cfg, token_chunk, run.grads(), ws1.data(), bytes,
                                     run.extra());
    r.logp = run.logp.host(), r.entropy = run.entropy.host(), r.dhidden = run.dhidden.host();
    r.dweight = run.dweight.host(), r.dbias = run.dbias.host();
    return r;
  })[0];
  const auto& want = w.result;

  device_problem<P> mine(q);
  linear_run<P> m(rows_of(head.hidden, D, sh.t0, sh.t0 + q.T), rows_of(head.weight, D, sh.c0, sh.c1),
                  rows_of(head.bias, 1, sh.c0, sh.c1), D);
  const grpokit::device::shape planned{sh.most_tokens, sh.most_columns, sh.most_seqs};
  const auto lay = layout();
  buffer<unsigned char> ws(grpokit::device::linear_workspace_bytes<P>(planned, token_chunk, lay));
  const auto got = calls.template many<P>(m.input(mine), mine.batch(), cfg, token_chunk, m.grads(), ws.data(),
                                         ws.size(), planned, lay, m.extra());
  const double tol = exact ? 1e-5 : 1e-4;
  if (bitwise && exact) {
    CHECK(std::memcmp(&got, &want, sizeof(got)) == 0);
  } else {
    CHECK(close(got.loss, want.loss, tol));
    CHECK(close(got.metrics.entropy_mean, want.metrics.entropy_mean, tol));
    CHECK(close(got.metrics.kl_ref, want.metrics.kl_ref, tol));
  }
  CHECK(got.metrics.tokens == want.metrics.tokens);
  if (P::vocab_prune) CHECK(want.metrics.masked_tokens_vocab_prune > 0);  // the pruning bites
  auto rows_agree = [&](const std::vector<float>& mine_rows, const std::vector<float>& all) {
    const std::vector<float> want_rows(all.begin() + sh.t0, all.begin() + sh.t0 + q.T);
    return agree(std::vector<double>(mine_rows.begin(), mine_rows.end()), want_rows, exact, tol);
  };
  if (exact) CHECK(got.metrics.masked_tokens_vocab_prune == want.metrics.masked_tokens_vocab_prune);
  CHECK(rows_agree(m.logp.host(), w.logp));
  CHECK(rows_agree(m.entropy.host(), w.entropy));
  auto as_float = [](const std::vector<S>& v) { return std::vector<float>(v.begin(), v.end()); };
  auto part = [](const std::vector<float>& v, std::int64_t width, std::int64_t r0, std::int64_t r1) {
    return std::vector<float>(v.begin() + r0 * width, v.begin() + r1 * width);
  };
  CHECK(agree(sum_over(g.tp, as_float(m.dhidden.host())),
              part(as_float(w.dhidden), D, sh.t0, sh.t0 + q.T), exact && g.tp_size == 1, tol));
  CHECK(agree(sum_over(g.dp, m.dweight.host()), part(w.dweight, D, sh.c0, sh.c1), exact && g.dp_size == 1,
              tol));
  CHECK(agree(sum_over(g.dp, m.dbias.host()), part(w.dbias, 1, sh.c0, sh.c1), exact && g.dp_size == 1, tol));

  if (!with_rejection) return;
  // the last rank's dhidden has a row too many: rejected on its host, raised on every rank
  linear_run<P> bad(rows_of(head.hidden, D, sh.t0, sh.t0 + q.T), rows_of(head.weight, D, sh.c0, sh.c1),
                    rows_of(head.bias, 1, sh.c0, sh.c1), D, g.rank == g.size - 1 ? q.T + 1 : q.T);
  bool threw = false;
  try {
    calls.template many<P>(bad.input(mine), mine.batch(), cfg, token_chunk, bad.grads(), ws.data(), ws.size(), planned,
                           lay, bad.extra());
  } catch (const grpokit::error& e) {
    threw = true;
    INFO(e.what());
    CHECK(std::string(e.what()).find(g.rank == g.size - 1 ? "dhidden" : "another rank") != std::string::npos);
  }
  CHECK(threw);
}

using grpokit::chunk;
using grpokit::policy;
using grpokit::precision;
namespace reduction = grpokit::reduction;

}  // namespace

TEST_CASE("device data parallel fused_loss: bitwise one process under batch_invariant") {
  compare_fused<policy<reduction::batch_invariant, precision<float, float>, chunk<32>>>(true);
}

TEST_CASE("device vocabulary parallel token_logprobs off the chunk grid: within rounding of one process", "[vocab]") {
  compare_logprobs_off_grid<policy<reduction::batch_invariant, precision<float, float>, chunk<32>>>();
}

TEST_CASE("device data parallel fused_loss: within rounding of one process otherwise (and vocabulary pruning)") {
  compare_fused<policy<reduction::deterministic, precision<float, float>, chunk<32>, grpokit::mask::vocab_prune>>(false);
}

namespace {
loss_config pruned_linear_config() {  // vocabulary pruning: the backward needs the whole rows' maxima again
  loss_config cfg;
  cfg.agg = grpokit::aggregation::token_sum;
  cfg.prune_rho = 0.3;
  cfg.entropy_coef = 0.02;
  return cfg;
}
loss_config kl_linear_config() {
  loss_config cfg;
  cfg.kl = grpokit::kl_estimator::k3;
  cfg.kl_coef = 0.05;
  cfg.entropy_coef = 0.01;
  return cfg;
}
using pruned_linear = policy<reduction::batch_invariant, precision<float, float>, chunk<32>, grpokit::mask::vocab_prune>;
using plain_linear = policy<reduction::deterministic, precision<float, float>, chunk<32>>;
}  // namespace

TEST_CASE("device data and vocabulary parallel fused_linear_loss: bitwise one process under batch_invariant", "[vocab]") {
  compare_linear<pruned_linear>(linear_calls<reference_gemm>{{0}}, true, pruned_linear_config(), 701, true);
}

TEST_CASE("device data and vocabulary parallel fused_linear_loss: within rounding otherwise", "[vocab]") {
  compare_linear<plain_linear>(linear_calls<reference_gemm>{{0}}, false, kl_linear_config(), 702, false);
}

// cuBLAS needs a real GPU: [linear] is left out on the simulator (tests/CMakeLists.txt).
TEST_CASE("device data and vocabulary parallel fused_linear_loss with cuBLAS: within rounding", "[linear]") {
  cublasHandle_t handle;
  REQUIRE(cublasCreate(&handle) == CUBLAS_STATUS_SUCCESS);
  const linear_calls<grpokit::detail::cublas_gemm> calls{{handle, 0}};
  compare_linear<pruned_linear>(calls, true, pruned_linear_config(), 703, true);
  compare_linear<plain_linear>(calls, false, kl_linear_config(), 704, false);
  // the public entry point: a null handle on the last rank is a rejection there, raised everywhere
  using P = plain_linear;
  const grid& g = the_grid();
  const ref::problem p = global_problem(705, 40);
  const share sh = my_share(p, 705, 32);
  const ref::problem q = share_of(p, sh.s0, sh.s1, sh.c0, sh.c1);
  const lm_head head(705, p.T, p.V, 4);
  device_problem<P> mine(q);
  linear_run<P> m(rows_of(head.hidden, 4, sh.t0, sh.t0 + q.T), rows_of(head.weight, 4, sh.c0, sh.c1),
                  rows_of(head.bias, 1, sh.c0, sh.c1), 4);
  const grpokit::device::shape planned{sh.most_tokens, sh.most_columns, sh.most_seqs};
  const auto lay = layout();
  buffer<unsigned char> ws(grpokit::device::linear_workspace_bytes<P>(planned, 3, lay));
  bool threw = false;
  try {
    grpokit::device::fused_linear_loss<P>(m.input(mine), mine.batch(), loss_config{}, 3, m.grads(),
                                          g.rank == g.size - 1 ? nullptr : handle, ws.data(), ws.size(), planned, lay);
  } catch (const grpokit::error& e) {
    threw = true;
    INFO(e.what());
    CHECK(std::string(e.what()).find(g.rank == g.size - 1 ? "null cuBLAS handle" : "another rank") !=
          std::string::npos);
  }
  CHECK(threw);
  cublasDestroy(handle);
}

namespace {
// the one-process outputs of policy_loss
struct policy_reference {
  grpokit::loss_result result{};
  std::vector<float> dlogp, dentropy;
  template <class F>
  void each(F f) {
    f(result), f(dlogp), f(dentropy);
  }
};
}  // namespace

TEST_CASE("device data parallel policy_loss on a stream of its own: bitwise one process, a rejection on every rank",
          "[data]") {
  using P = policy<reduction::batch_invariant, precision<float, float>>;
  const int rank = the_grid().dp_rank, ranks = the_grid().dp_size;  // layout.tp: unused by policy_loss
  cudaStream_t stream;
  REQUIRE(cudaStreamCreate(&stream) == cudaSuccess);
  const ref::problem p = global_problem(909, 16);
  const auto c = cuts(909, p.S, ranks);
  const ref::problem q = share_of(p, c[rank], c[rank + 1], 0, p.V);
  loss_config cfg{};
  cfg.kl = grpokit::kl_estimator::k3;
  cfg.kl_coef = 0.05;
  cfg.entropy_coef = 0.01;
  cfg.is = grpokit::is_correction::token_truncate;  // with a batch pass: its gathers, also on rejection
  cfg.is_batch_normalize = true;
  cfg.positive_nll_coef = 0.1;
  cfg.top_entropy_quantile = 0.5;  // and two selections: their rounds of gathers, also on rejection
  cfg.obj = grpokit::objective::clip_cov;
  cfg.clip_cov_ratio = 0.3;
  cfg.clip_cov_lb = -1;
  cfg.clip_cov_ub = 1;
  cfg.clip_cov_seed = 11;
  cfg.m2po_threshold = 0.02;  // and M2PO's mean rule before the summaries, also on rejection
  // the current policy: the rollout log-probs, entropies from the old ones
  auto entropy_of = [](const device_problem<P>& d) {
    auto h = d.logp_old.host();
    for (auto& x : h) x = -x;
    return h;
  };
  const policy_reference w = references<policy_reference>(1, [&](int) {
    device_problem<P> whole(p);
    const buffer<float> ent_w(entropy_of(whole));
    buffer<float> dlogp_w(p.T), dent_w(p.T);
    policy_reference r;
    r.result = grpokit::device::policy_loss<P>({whole.logp_rollout.cspan(), ent_w.cspan()}, whole.batch(), cfg,
                                               {dlogp_w.span(), dent_w.span()}, whole.ws(), whole.ws_bytes(), stream);
    r.dlogp = dlogp_w.host(), r.dentropy = dent_w.host();
    return r;
  })[0];
  const auto& want = w.result;
  device_problem<P> mine(q);
  const buffer<float> ent_m(entropy_of(mine));
  buffer<float> dlogp_m(q.T), dent_m(q.T);
  std::int64_t most = 0;
  for (int r = 0; r < ranks; ++r) most = std::max(most, c[r + 1] - c[r]);
  const grpokit::device::shape planned{p.T, 0, most};
  const auto lay = layout();
  buffer<unsigned char> ws(grpokit::device::workspace_bytes<P>(planned, lay));
  const auto got = grpokit::device::policy_loss<P>({mine.logp_rollout.cspan(), ent_m.cspan()}, mine.batch(), cfg,
                                                   {dlogp_m.span(), dent_m.span()}, ws.data(), ws.size(), planned, lay,
                                                   stream);
  CHECK(std::memcmp(&got, &want, sizeof(got)) == 0);
  CHECK(want.metrics.is_batch_norm_factor != 1);
  CHECK(want.metrics.loss_nll != 0);
  CHECK(want.metrics.masked_tokens_entropy > 0);
  CHECK(want.metrics.cov_tokens > 0);
  CHECK(want.metrics.masked_tokens_m2po > 0);
  const std::int64_t t0 = p.b.seq_offsets[c[rank]];
  CHECK(same_bits(dlogp_m.host(), w.dlogp, t0));
  CHECK(same_bits(dent_m.host(), w.dentropy, t0));
  // the last rank passes gradients of the wrong size: rejected on its host, raised on every rank
  bool threw = false;
  try {
    const std::int64_t n = rank == ranks - 1 ? q.T + 1 : q.T;
    buffer<float> d(static_cast<std::size_t>(n) + 1);
    grpokit::device::policy_loss<P>({mine.logp_rollout.cspan(), ent_m.cspan()}, mine.batch(), cfg,
                                    {{d.data(), n}, dent_m.span()}, ws.data(), ws.size(), planned, lay, stream);
  } catch (const grpokit::error&) {
    threw = true;
  }
  CHECK(threw);
  cudaStreamDestroy(stream);
}

namespace {
// compute_advantages with the sequences cut across the DP ranks (groups straddle ranks) against the
// one-process device call on the whole batch: the rank's advantages and mask and the statistics
// bitwise (the same kernels on the same gathered inputs).
struct advantage_problem {
  std::uint64_t seed;
  std::vector<std::int64_t> offsets{0};
  std::vector<double> r, lr, gb, tokens;
  grpokit::advantage_config cfg;
  advantage_problem(std::uint64_t seed_, bool with_tokens) : seed(seed_) {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<std::int64_t> size(1, 6);
    std::uniform_int_distribution<int> coin(0, 3);
    std::normal_distribution<double> n(0, 2);
    for (int k = 0; k < 7; ++k) offsets.push_back(offsets.back() + size(rng));
    const auto S = static_cast<std::size_t>(offsets.back());
    r.resize(S), lr.resize(S), gb.resize(offsets.size() - 1), tokens.resize(with_tokens ? S : 0);
    for (auto& v : r) v = coin(rng) * 0.5;
    for (auto& v : lr) v = n(rng);
    for (auto& v : gb) v = coin(rng) * 0.25;
    for (auto& v : tokens) v = coin(rng) * 5;
    cfg.scale = with_tokens ? grpokit::adv_scale::whiten : grpokit::adv_scale::batch;
    cfg.mask_zero_variance = true;
  }
};
struct advantage_reference {
  grpokit::advantage_stats stats{};
  std::vector<double> adv;
  std::vector<std::uint8_t> keep;
  template <class F>
  void each(F f) {
    f(stats), f(adv), f(keep);
  }
};
template <class P>
advantage_reference advantages_on_one_process(const advantage_problem& a) {
  const std::int64_t S = a.offsets.back();
  const buffer<double> dr(a.r), dlr(a.lr), dgb(a.gb), dtok(a.tokens);
  const buffer<std::int64_t> doff(a.offsets);
  buffer<double> da(S);
  buffer<std::uint8_t> dk(S);
  buffer<unsigned char> ws1(grpokit::device::workspace_bytes<P>({0, 0, S}));
  advantage_reference out;
  out.stats =
      grpokit::device::compute_advantages<P>({dr.cspan(), doff.cspan(), dlr.cspan(), {}, dgb.cspan(), dtok.cspan()},
                                             a.cfg, {da.span(), dk.span()}, ws1.data(), ws1.size());
  out.adv = da.host(), out.keep = dk.host();
  return out;
}
template <class P>
void compare_advantages(const advantage_problem& a, const advantage_reference& want) {
  const grid& g = the_grid();
  const std::int64_t S = a.offsets.back();
  const auto c = cuts(a.seed, S, g.dp_size);
  const std::int64_t s0 = c[g.dp_rank], s1 = c[g.dp_rank + 1];
  std::int64_t most = 0;
  for (int q = 0; q < g.dp_size; ++q) most = std::max(most, c[q + 1] - c[q]);
  INFO("seed " << a.seed << ", dp " << g.dp_size << ", rank " << g.dp_rank << ", sequences [" << s0 << ", " << s1
                << ") of " << S);
  auto mine = [&](const std::vector<double>& v) {
    return v.empty() ? v : std::vector<double>(v.begin() + s0, v.begin() + s1);
  };
  const buffer<double> mr(mine(a.r)), mlr(mine(a.lr)), mtok(mine(a.tokens)), dgb(a.gb);
  const buffer<std::int64_t> doff(a.offsets);
  buffer<double> ma(s1 - s0);
  buffer<std::uint8_t> mk(s1 - s0);
  const grpokit::device::shape planned{0, 0, most};
  const auto lay = layout();
  buffer<unsigned char> ws(grpokit::device::workspace_bytes<P>(planned, lay));
  const auto got =
      grpokit::device::compute_advantages<P>({mr.cspan(), doff.cspan(), mlr.cspan(), {}, dgb.cspan(), mtok.cspan()},
                                             a.cfg, {ma.span(), mk.span()}, ws.data(), ws.size(), planned, lay);
  CHECK(std::memcmp(&got, &want.stats, sizeof(got)) == 0);
  CHECK(same_bits(ma.host(), want.adv, s0));
  CHECK(same_bits(mk.host(), want.keep, s0));
}
// a baseline's case: its one-process reference and its distributed comparison
struct advantage_case {
  std::uint64_t seed;
  bool with_tokens;
  advantage_reference (*one)(const advantage_problem&);
  void (*many)(const advantage_problem&, const advantage_reference&);
};
template <class P>
advantage_case advantage_case_of(std::uint64_t seed, bool with_tokens = false) {
  return {seed, with_tokens, &advantages_on_one_process<P>, &compare_advantages<P>};
}
}  // namespace

TEST_CASE("device data parallel compute_advantages: groups across ranks, bitwise one process", "[data]") {
  using D = grpokit::precision<double, double>;
  std::vector<advantage_case> cases;
  for (std::uint64_t seed = 1; seed <= 3; ++seed) {
    cases.push_back(advantage_case_of<policy<D>>(seed));
    cases.push_back(advantage_case_of<policy<D, grpokit::baseline::median>>(seed));
    cases.push_back(advantage_case_of<policy<D, grpokit::baseline::ess_scaled>>(seed));
    cases.push_back(advantage_case_of<policy<D, grpokit::baseline::external>>(seed));
    cases.push_back(advantage_case_of<policy<D, grpokit::baseline::opo>>(seed, true));
  }
  auto problem_of = [&](int i) { return advantage_problem(cases[i].seed, cases[i].with_tokens); };
  const auto refs = references<advantage_reference>(static_cast<int>(cases.size()),
                                                    [&](int i) { return cases[i].one(problem_of(i)); });
  for (std::size_t i = 0; i < cases.size(); ++i) cases[i].many(problem_of(static_cast<int>(i)), refs[i]);
  // a rank with a wrong output size: rejected there, raised on every rank
  using P = policy<D>;
  const grid& g = the_grid();
  const buffer<double> r(std::vector<double>(4, 1.0));
  const buffer<std::int64_t> off(std::vector<std::int64_t>{0, static_cast<std::int64_t>(4 * g.dp_size)});
  buffer<double> a(5);
  buffer<std::uint8_t> k(4);
  const grpokit::device::shape planned{0, 0, 4};
  const auto lay = layout();
  buffer<unsigned char> ws(grpokit::device::workspace_bytes<P>(planned, lay));
  const std::int64_t n = g.dp_rank == g.dp_size - 1 ? 5 : 4;
  bool threw = false;
  try {
    grpokit::device::compute_advantages<P>({r.cspan(), off.cspan(), {}, {}}, {}, {{a.data(), n}, k.span()}, ws.data(),
                                           ws.size(), planned, lay);
  } catch (const grpokit::error& e) {
    threw = true;
    INFO(e.what());
    CHECK(std::string(e.what()).find(g.dp_rank == g.dp_size - 1 ? "adv" : "rejected its input") != std::string::npos);
  }
  CHECK(threw);
}

TEST_CASE("device data and vocabulary parallel: an error on one rank throws on every rank") {
  using P = policy<reduction::batch_invariant, precision<float, float>, chunk<32>>;
  const grid& g = the_grid();
  const ref::problem p = global_problem(77, 3 * 32 + 5);
  const share sh = my_share(p, 77, 32);
  const auto lay = layout();
  const grpokit::device::shape planned{p.T + 1, sh.most_columns, p.S + 1};  // room for the appended token
  buffer<unsigned char> ws(grpokit::device::workspace_bytes<P>(planned, lay));
  loss_config cfg{};
  cfg.positive_nll_coef = 0.1;  // a batch pass: its gather, also on the rejected rank
  cfg.top_entropy_quantile = 0.5;  // and the selection's rounds of gathers
  for (const int bad_rank : {0, g.size - 1}) {
    for (const bool on_device : {false, true}) {
      INFO("rank " << g.rank << " of " << g.size << " (tp " << g.tp_size << "), bad rank " << bad_rank
                   << (on_device ? ", bad target" : ", bad shape"));
      ref::problem q = share_of(p, sh.s0, sh.s1, sh.c0, sh.c1);
      // found by a kernel: a target past the whole vocabulary, on a token appended by the bad rank's
      // TP group (its ranks hold the same rows)
      const bool bad_group = g.dp_rank == bad_rank / g.tp_size;
      if (bad_group && on_device) {
        q.logits.resize(q.logits.size() + static_cast<std::size_t>(q.V), 0.0);
        q.targets.push_back(p.V + 3);
        ++q.T;
        if (q.S == 0) {
          q.S = 1;
          q.b.seq_offsets.push_back(0);
          q.b.adv.push_back(0.5L);
          if (!q.b.seq_mask.empty()) q.b.seq_mask.push_back(1);
          q.b.positive.push_back(1);  // the share's flags (none for an empty share), now one sequence's
        }
        q.b.seq_offsets.back() = q.T;
        for (auto* v : {&q.b.logp_old, &q.b.logp_ref, &q.b.logp_rollout})
          if (!v->empty()) v->push_back(-1.0L);
        if (!q.b.token_mask.empty()) q.b.token_mask.push_back(1);
      }
      device_problem<P> mine(q);
      buffer<float> dmine(static_cast<std::size_t>(q.T * q.V) + 1);
      // a bad shape: dlogits with one column too few on the bad rank (rejected on its host)
      const std::int64_t dcols = g.rank == bad_rank && !on_device ? q.V - 1 : q.V;
      bool threw = false;
      try {
        grpokit::device::fused_loss<P>(mine.input(), mine.batch(), cfg, {dmine.data(), q.T, dcols, dcols}, ws.data(),
                                       ws.size(), planned, lay);
      } catch (const grpokit::error& e) {
        threw = true;
        const std::string what = e.what();
        INFO(what);
        const bool own = on_device ? bad_group : g.rank == bad_rank;
        CHECK(what.find(!own ? "another rank" : on_device ? "out of range" : "dlogits") != std::string::npos);
      }
      CHECK(threw);
    }
  }
  // the sampler's support is refused over a vocabulary split on the device (the host's layouts take
  // it), on every rank alike, also by fused_linear_loss
  cfg.top_k = 5;
  const ref::problem q = share_of(p, sh.s0, sh.s1, sh.c0, sh.c1);
  device_problem<P> mine(q);
  buffer<float> dmine(static_cast<std::size_t>(q.T * q.V) + 1);
  REQUIRE_ERROR(grpokit::device::fused_loss<P>(mine.input(), mine.batch(), cfg, {dmine.data(), q.T, q.V, q.V},
                                               ws.data(), ws.size(), planned, lay),
                "top_k / top_p");
  const lm_head head(77, p.T, p.V, 4);
  linear_run<P> m(rows_of(head.hidden, 4, sh.t0, sh.t0 + q.T), rows_of(head.weight, 4, sh.c0, sh.c1),
                  rows_of(head.bias, 1, sh.c0, sh.c1), 4);
  buffer<unsigned char> lws(grpokit::device::linear_workspace_bytes<P>(planned, 3, lay));
  REQUIRE_ERROR(grpokit::detail::fused_linear_loss_with<P>(reference_gemm{0}, m.input(mine), mine.batch(), cfg, 3,
                                                           m.grads(), lws.data(), lws.size(), planned, lay, 0, {}),
                "top_k / top_p");
  // a data-parallel layout takes it: every rank's rows are whole (top-1: nearly every target, not
  // its row's largest logit, is masked)
  if (g.tp_size == 1) {
    const auto dp_only = grpokit::data_parallel(staged(grpokit::mpi_communicator(the_grid().dp)));
    buffer<unsigned char> dws(grpokit::device::workspace_bytes<P>(planned, dp_only));
    cfg.top_k = 1;
    const auto res = grpokit::device::fused_loss<P>(mine.input(), mine.batch(), cfg, {dmine.data(), q.T, q.V, q.V},
                                                    dws.data(), dws.size(), planned, dp_only);
    CHECK(res.metrics.masked_tokens_vocab_prune > 0);
  }
}
