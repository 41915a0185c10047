// Data- and vocabulary-parallel entry points under MPI against the single-process result over the
// whole batch. Every rank builds the same global problem (same seed), runs the one-process call
// itself, then its share of the distributed call on a DP x TP grid (GRPOKIT_TP ranks per vocabulary
// group, the rest data parallel), and compares its block: bitwise under batch_invariant with
// chunk-aligned slices, within rounding otherwise. Sequence and column cuts are random (empty DP
// shares included).
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <grpokit/comm/mpi.hpp>
#include <grpokit/host/distributed.hpp>

#include "../catch.hpp"
#include "grid.hpp"
#include "../support.hpp"

namespace {

using grpokit::loss_config;

using mpi_grid::grid;
using mpi_grid::the_grid;

auto layout() {
  const grid& g = the_grid();
  return grpokit::data_and_vocab_parallel(grpokit::mpi_communicator(g.dp), grpokit::mpi_communicator(g.tp));
}

// parts + 1 cut points of [0, n): 0, ..., n, non-decreasing, interior cuts on multiples of `align`;
// with `nonempty` every part gets at least one multiple of align (n must allow it).
std::vector<std::int64_t> cuts(std::mt19937_64& rng, std::int64_t n, int parts, std::int64_t align, bool nonempty) {
  std::vector<std::int64_t> c{0};
  const std::int64_t slots = (n - 1) / align;  // interior multiples of align: align, 2 align, ...
  std::vector<std::int64_t> pick;
  if (nonempty) {
    std::vector<std::int64_t> all;
    for (std::int64_t k = 1; k <= slots; ++k) all.push_back(k * align);
    std::shuffle(all.begin(), all.end(), rng);
    pick.assign(all.begin(), all.begin() + (parts - 1));
  } else {
    std::uniform_int_distribution<std::int64_t> d(0, n / align);
    for (int i = 0; i + 1 < parts; ++i) pick.push_back(std::min(n, d(rng) * align));
  }
  std::sort(pick.begin(), pick.end());
  c.insert(c.end(), pick.begin(), pick.end());
  c.push_back(n);
  return c;
}

// This rank's share of a problem: sequences [s0, s1) (tokens [t0, t1)) and columns [c0, c1).
struct share {
  std::int64_t s0, s1, t0, t1, c0, c1;
};

share my_share(const ref::problem& p, std::uint64_t seed, std::int64_t column_align) {
  const grid& g = the_grid();
  std::mt19937_64 rng(seed);  // the same cuts on every rank
  const auto seqs = cuts(rng, p.S, g.dp_size, 1, false);
  const auto cols = cuts(rng, p.V, g.tp_size, column_align, true);
  share s;
  s.s0 = seqs[g.dp_rank];
  s.s1 = seqs[g.dp_rank + 1];
  s.t0 = p.b.seq_offsets[s.s0];
  s.t1 = p.b.seq_offsets[s.s1];
  s.c0 = cols[g.tp_rank];
  s.c1 = cols[g.tp_rank + 1];
  return s;
}

template <class T>
std::vector<T> slice(const std::vector<T>& v, std::int64_t b, std::int64_t e) {
  if (v.empty()) return {};
  return std::vector<T>(v.begin() + b, v.begin() + e);
}

// The local inputs of a share, in the policy's types.
template <class P>
struct local_run {
  using S = typename P::storage_type;
  using R = typename P::accum_type;
  std::int64_t T, V;
  std::vector<S> logits, dlogits;
  std::vector<std::int64_t> targets, offsets;
  std::vector<R> temperature, adv, logp_old, logp_ref, logp_rollout, logp, entropy;
  std::vector<std::uint8_t> token_mask, seq_mask, positive;

  local_run(const support::host_run<P>& whole, const ref::problem& p, const share& sh)
      : T(sh.t1 - sh.t0), V(sh.c1 - sh.c0) {
    logits.resize(static_cast<std::size_t>(T * V));
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t v = 0; v < V; ++v)
        logits[static_cast<std::size_t>(t * V + v)] =
            whole.logits[static_cast<std::size_t>((sh.t0 + t) * p.V + sh.c0 + v)];
    dlogits.assign(logits.size(), S{});
    targets = slice(p.targets, sh.t0, sh.t1);
    for (std::int64_t s = sh.s0; s <= sh.s1; ++s) offsets.push_back(p.b.seq_offsets[s] - sh.t0);
    temperature = slice(whole.temperature, sh.t0, sh.t1);
    adv = slice(whole.adv, sh.s0, sh.s1);
    logp_old = slice(whole.logp_old, sh.t0, sh.t1);
    logp_ref = slice(whole.logp_ref, sh.t0, sh.t1);
    logp_rollout = slice(whole.logp_rollout, sh.t0, sh.t1);
    token_mask = slice(whole.token_mask, sh.t0, sh.t1);
    seq_mask = slice(whole.seq_mask, sh.s0, sh.s1);
    positive = slice(whole.positive, sh.s0, sh.s1);
    logp.resize(static_cast<std::size_t>(T));
    entropy.resize(static_cast<std::size_t>(T));
  }
  grpokit::logits_input<S, R> input() const { return {{logits.data(), T, V, V}, targets, temperature}; }
  grpokit::rollout_batch<R> batch() const {
    return {offsets, adv, logp_old, logp_ref, logp_rollout, token_mask, seq_mask, positive};
  }
};

template <class T>
bool same_bits(const T& a, const T& b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}
bool close(double a, double b, double tol) { return std::fabs(a - b) <= tol * (1 + std::fabs(b)); }

void check_metrics(const grpokit::loss_result& got, const grpokit::loss_result& want, bool bitwise, double tol) {
  const auto& g = got.metrics;
  const auto& w = want.metrics;
  if (bitwise) {
    CHECK(same_bits(got, want));
  } else {
    CHECK(close(got.loss, want.loss, tol));
    CHECK(close(g.loss_pg, w.loss_pg, tol));
    CHECK(close(g.loss_kl, w.loss_kl, tol));
    CHECK(close(g.loss_entropy, w.loss_entropy, tol));
    CHECK(close(g.entropy_mean, w.entropy_mean, tol));
    CHECK(close(g.approx_kl_old, w.approx_kl_old, tol));
    CHECK(close(g.kl_ref, w.kl_ref, tol));
    CHECK(close(g.is_ess, w.is_ess, tol));
    CHECK(close(g.adv_std, w.adv_std, tol));
    CHECK(close(g.loss_nll, w.loss_nll, tol));
    CHECK(close(g.is_batch_norm_factor, w.is_batch_norm_factor, tol));
    CHECK(close(g.entropy_threshold, w.entropy_threshold, tol));
  }
  CHECK(g.masked_tokens_entropy == w.masked_tokens_entropy);
  CHECK(g.tokens == w.tokens);
  CHECK(g.tokens_kept == w.tokens_kept);
  CHECK(g.seqs == w.seqs);
  CHECK(g.masked_tokens_padding == w.masked_tokens_padding);
  CHECK(g.masked_tokens_vocab_prune == w.masked_tokens_vocab_prune);
  CHECK(g.masked_seqs_trust_region == w.masked_seqs_trust_region);
}

template <class A, class B>
void check_values(const char* what, const A* got, const B* want, std::int64_t n, bool bitwise, double tol) {
  std::int64_t bad = 0, first = -1;
  for (std::int64_t i = 0; i < n; ++i) {
    const double g = grpokit::math::load<double>(got[i]), w = grpokit::math::load<double>(want[i]);
    const bool ok = bitwise ? std::memcmp(&got[i], &want[i], sizeof(A)) == 0 : (g == w || close(g, w, tol));
    if (!ok && bad++ == 0) first = i;
  }
  INFO(what << ": " << bad << " of " << n << " differ, first at " << first);
  CHECK(bad == 0);
}

std::vector<loss_config> configs() {
  std::vector<loss_config> out;
  loss_config a;
  a.kl = grpokit::kl_estimator::k3;
  a.kl_coef = 0.05;
  a.entropy_coef = 0.01;
  a.is = grpokit::is_correction::token_truncate;
  a.is_batch_normalize = true;  // the batch pass over the ranks
  a.positive_nll_coef = 0.2;
  out.push_back(a);
  loss_config b;
  b.obj = grpokit::objective::gspo;
  b.agg = grpokit::aggregation::seq_mean_token_mean;
  b.top_entropy_quantile = 0.3;  // the selection's histograms summed over the ranks
  out.push_back(b);
  loss_config c;
  c.obj = grpokit::objective::cispo;
  c.agg = grpokit::aggregation::seq_mean_token_sum_norm;
  c.norm_constant = 16;
  c.dp_size = 4;
  out.push_back(c);
  loss_config d;
  d.agg = grpokit::aggregation::seq_mean_token_sum;
  d.obj = grpokit::objective::clip_cov;  // its random subset over the ranks (counted in the first round)
  d.clip_cov_ratio = 0.3;
  d.clip_cov_lb = -0.5;
  d.clip_cov_ub = 0.5;
  d.clip_cov_seed = 7;
  d.is = grpokit::is_correction::sequence_truncate;
  d.is_batch_normalize = true;
  d.entropy_coef = -0.02;
  out.push_back(d);
  loss_config e;
  e.agg = grpokit::aggregation::token_sum;
  e.obj = grpokit::objective::kl_cov;  // KL-Cov's top-k over the ranks, ties by position
  e.kl_cov_ratio = 0.2;
  e.kl = grpokit::kl_estimator::k2;
  e.trm_max_threshold = 0.6;
  e.prune_rho = 1e-2;
  out.push_back(e);
  return out;
}

ref::problem global_problem(std::uint64_t seed, std::int64_t V, bool per_token_temperature) {
  return support::packed_problem(seed, V, 13, 9, per_token_temperature);
}

// fused_loss, token_logprobs and logits_backward of policy P on the grid against one process.
template <class P>
void compare_fused(bool bitwise, double tol, std::int64_t column_align) {
  using S = typename P::storage_type;
  using R = typename P::accum_type;
  const std::int64_t V = 3 * 64 + 13;
  std::uint64_t seed = 1000;
  for (const loss_config& cfg : configs()) {
    for (const bool temperature : {false, true}) {
      ++seed;
      INFO("policy " << support::describe<P>() << ", seed " << seed << ", grid dp " << the_grid().dp_size << " x tp "
                     << the_grid().tp_size << ", rank " << the_grid().rank);
      auto p = global_problem(seed, V, temperature);
      const auto whole = support::run_fused<P>(p, cfg);
      const share sh = my_share(p, seed, column_align);
      local_run<P> mine(whole, p, sh);
      const auto got =
          grpokit::host::fused_loss<P>(mine.input(), mine.batch(), cfg, {mine.dlogits.data(), mine.T, mine.V, mine.V},
                                       layout(), {mine.logp, mine.entropy});
      check_metrics(got, whole.result, bitwise, tol);
      check_values("logp", mine.logp.data(), whole.logp.data() + sh.t0, mine.T, bitwise, tol);
      check_values("entropy", mine.entropy.data(), whole.entropy.data() + sh.t0, mine.T, bitwise, tol);
      std::vector<S> want(mine.dlogits.size());
      for (std::int64_t t = 0; t < mine.T; ++t)
        for (std::int64_t v = 0; v < mine.V; ++v)
          want[static_cast<std::size_t>(t * mine.V + v)] =
              whole.dlogits[static_cast<std::size_t>((sh.t0 + t) * p.V + sh.c0 + v)];
      check_values("dlogits", mine.dlogits.data(), want.data(), static_cast<std::int64_t>(want.size()), bitwise, tol);

      // the single steps: token_logprobs, then logits_backward from the one-process gradients
      std::vector<R> logp(mine.logp.size()), entropy(mine.logp.size()), lse(mine.logp.size());
      grpokit::host::token_logprobs<P>(mine.input(), cfg, {logp, entropy, lse}, layout());
      check_values("token_logprobs logp", logp.data(), whole.logp.data() + sh.t0, mine.T, bitwise, tol);
      std::vector<R> dlogp(logp.size(), R(0)), dent(logp.size(), R(0));
      for (std::int64_t t = 0; t < mine.T; ++t) dlogp[static_cast<std::size_t>(t)] = R(t % 3 == 0 ? 0 : 0.5 - 0.1 * t);
      for (std::int64_t t = 0; t < mine.T; ++t) dent[static_cast<std::size_t>(t)] = R(t % 2 == 0 ? 0.03 : 0);
      std::vector<S> dx(mine.logits.size());
      grpokit::host::logits_backward<P>(mine.input(), {lse, entropy, dlogp, dent}, cfg,
                                        {dx.data(), mine.T, mine.V, mine.V}, layout());
      // the same rows in one process: the whole rows of my tokens
      std::vector<S> rows(static_cast<std::size_t>(mine.T * p.V)), drows(rows.size());
      std::copy(whole.logits.begin() + sh.t0 * p.V, whole.logits.begin() + sh.t1 * p.V, rows.begin());
      std::vector<R> lse1(logp.size()), logp1(logp.size()), ent1(logp.size());
      const grpokit::logits_input<S, R> rows_in{{rows.data(), mine.T, p.V, p.V}, mine.targets, mine.temperature};
      grpokit::host::token_logprobs<P>(rows_in, cfg, {logp1, ent1, lse1});
      check_values("token_logprobs lse", lse.data(), lse1.data(), mine.T, bitwise, tol);
      grpokit::host::logits_backward<P>(rows_in, {lse1, ent1, dlogp, dent}, cfg, {drows.data(), mine.T, p.V, p.V});
      for (std::int64_t t = 0; t < mine.T; ++t)
        for (std::int64_t v = 0; v < mine.V; ++v)
          want[static_cast<std::size_t>(t * mine.V + v)] = drows[static_cast<std::size_t>(t * p.V + sh.c0 + v)];
      check_values("logits_backward", dx.data(), want.data(), static_cast<std::int64_t>(want.size()), bitwise, tol);
    }
  }
}

using grpokit::chunk;
using grpokit::policy;
using grpokit::precision;
namespace reduction = grpokit::reduction;
namespace mask = grpokit::mask;

}  // namespace

TEST_CASE("distributed fused_loss: bitwise one process under batch_invariant, chunk-aligned slices") {
  compare_fused<policy<reduction::batch_invariant, precision<float, float>, chunk<64>>>(true, 0, 64);
  compare_fused<policy<reduction::batch_invariant, precision<float, float>, chunk<64>, mask::vocab_prune>>(true, 0, 64);
  compare_fused<policy<reduction::batch_invariant, precision<double, double>, chunk<64>, mask::trust_region>>(true, 0,
                                                                                                              64);
  compare_fused<policy<reduction::batch_invariant, precision<__nv_bfloat16, float>, chunk<64>>>(true, 0, 64);
}

TEST_CASE("distributed fused_loss: within rounding otherwise") {
  // vectorised float rows (fast, deterministic) and slices off the chunk grid
  compare_fused<policy<reduction::fast, precision<float, float>, chunk<64>>>(false, 2e-5, 1);
  compare_fused<policy<reduction::deterministic, precision<float, float>, chunk<64>, mask::vocab_prune>>(false, 2e-5,
                                                                                                         1);
  compare_fused<policy<reduction::batch_invariant, precision<float, float>, chunk<64>>>(false, 2e-5, 1);
  compare_fused<policy<reduction::deterministic, precision<double, double>, chunk<64>>>(false, 1e-12, 64);
}

TEST_CASE("distributed compute_advantages: groups split across ranks, bitwise one process") {
  const grid& g = the_grid();
  // with_tokens: the sequences' token counts gathered too, and adv_scale::whiten over the whole batch
  auto run = [&](auto baseline_tag, bool with_log_ratio, bool with_tokens = false) {
    using B = decltype(baseline_tag);
    using P = policy<precision<double, double>, B>;
    std::mt19937_64 rng(77 + static_cast<int>(with_log_ratio));
    std::uniform_int_distribution<std::int64_t> size(1, 9);
    std::vector<std::int64_t> groups{0};
    while (groups.back() < 41) groups.push_back(std::min<std::int64_t>(41, groups.back() + size(rng)));
    const std::int64_t S = groups.back();
    std::vector<double> rewards(S), lr(with_log_ratio ? S : 0), tokens(with_tokens ? S : 0);
    std::uniform_int_distribution<int> coin(0, 3);
    std::normal_distribution<double> n(0, 1);
    for (auto& r : rewards) r = coin(rng) == 0 ? 1.0 : n(rng);
    for (auto& l : lr) l = 0.3 * n(rng);
    for (auto& t : tokens) t = coin(rng) * 7;
    grpokit::advantage_config cfg;
    cfg.mask_zero_variance = true;
    if (with_tokens) cfg.scale = grpokit::adv_scale::whiten;
    std::vector<double> adv(S);
    std::vector<std::uint8_t> keep(S);
    const auto want = grpokit::host::compute_advantages<P>({rewards, groups, lr, {}, {}, tokens}, cfg, {adv, keep});
    const auto c = cuts(rng, S, g.dp_size, 1, false);
    const std::int64_t s0 = c[g.dp_rank], s1 = c[g.dp_rank + 1];
    std::vector<double> my_adv(s1 - s0);
    std::vector<std::uint8_t> my_keep(s1 - s0);
    const auto my_r = slice(rewards, s0, s1), my_lr = slice(lr, s0, s1), my_tokens = slice(tokens, s0, s1);
    const auto got = grpokit::host::compute_advantages<P>({my_r, groups, my_lr, {}, {}, my_tokens}, cfg,
                                                          {my_adv, my_keep}, layout());
    INFO("rank " << g.rank << " sequences [" << s0 << ", " << s1 << ")");
    CHECK(same_bits(got, want));
    check_values("adv", my_adv.data(), adv.data() + s0, s1 - s0, true, 0);
    CHECK(std::equal(my_keep.begin(), my_keep.end(), keep.begin() + s0));
  };
  run(grpokit::baseline::mean{}, false);
  run(grpokit::baseline::median{}, false);
  run(grpokit::baseline::leave_one_out{}, false);
  run(grpokit::baseline::ess_scaled{}, true);
  run(grpokit::baseline::opo{}, false, true);
  run(grpokit::baseline::mean{}, false, true);
}

TEST_CASE("distributed fused_linear_loss: the vocabulary-parallel LM head") {
  using P = policy<reduction::batch_invariant, precision<float, float>, chunk<64>>;
  const grid& g = the_grid();
  const std::int64_t V = 3 * 64 + 13, D = 6, chunk_tokens = 5;
  for (const loss_config& cfg : configs()) {
    auto p = global_problem(500 + static_cast<std::uint64_t>(cfg.agg), V, true);
    std::mt19937_64 rng(9);
    std::normal_distribution<double> n(0, 0.7);
    std::vector<float> hidden(static_cast<std::size_t>(p.T * D)), weight(static_cast<std::size_t>(V * D)),
        bias(static_cast<std::size_t>(V));
    for (auto& x : hidden) x = static_cast<float>(n(rng));
    for (auto& x : weight) x = static_cast<float>(n(rng));
    for (auto& x : bias) x = static_cast<float>(n(rng));
    support::host_run<P> whole;
    support::load_batch(whole, p);
    std::vector<float> dhidden(hidden.size()), dweight(weight.size(), 0.f), dbias(bias.size(), 0.f), logp(p.T);
    const auto want = grpokit::host::fused_linear_loss<P>(
        {{hidden.data(), p.T, D, D}, {weight.data(), V, D, D}, bias, p.targets, whole.temperature}, whole.batch(p), cfg,
        chunk_tokens, {{dhidden.data(), p.T, D, D}, {}, {dweight.data(), V, D, D}, dbias}, {logp, {}});

    const share sh = my_share(p, 600 + static_cast<std::uint64_t>(cfg.agg), 64);
    whole.logits.assign(static_cast<std::size_t>(p.T * V), 0.f);  // local_run slices the batch; logits unused
    local_run<P> mine(whole, p, sh);
    const std::int64_t T = mine.T, Vr = mine.V;
    std::vector<float> my_hidden(hidden.begin() + sh.t0 * D, hidden.begin() + sh.t1 * D);
    std::vector<float> my_weight(weight.begin() + sh.c0 * D, weight.begin() + sh.c1 * D);
    std::vector<float> my_bias(bias.begin() + sh.c0, bias.begin() + sh.c1);
    std::vector<float> my_dhidden(my_hidden.size()), my_dweight(my_weight.size(), 0.f), my_dbias(my_bias.size(), 0.f);
    const auto got = grpokit::host::fused_linear_loss<P>(
        {{my_hidden.data(), T, D, D}, {my_weight.data(), Vr, D, D}, my_bias, mine.targets, mine.temperature},
        mine.batch(), cfg, chunk_tokens, {{my_dhidden.data(), T, D, D}, {}, {my_dweight.data(), Vr, D, D}, my_dbias},
        layout(), {mine.logp, {}});
    INFO("agg " << static_cast<int>(cfg.agg) << ", rank " << g.rank);
    check_metrics(got, want, true, 0);
    check_values("logp", mine.logp.data(), logp.data() + sh.t0, T, true, 0);
    // dweight and dbias: this rank's vocabulary rows, summed over the DP ranks (the DDP all-reduce)
    MPI_Allreduce(MPI_IN_PLACE, my_dweight.data(), static_cast<int>(my_dweight.size()), MPI_FLOAT, MPI_SUM, g.dp);
    MPI_Allreduce(MPI_IN_PLACE, my_dbias.data(), static_cast<int>(my_dbias.size()), MPI_FLOAT, MPI_SUM, g.dp);
    const bool one_dp = g.dp_size == 1;
    check_values("dweight", my_dweight.data(), dweight.data() + sh.c0 * D, Vr * D, one_dp, 1e-5);
    check_values("dbias", my_dbias.data(), dbias.data() + sh.c0, Vr, one_dp, 1e-5);
    // dhidden: this rank's part, summed over the TP ranks by the caller
    MPI_Allreduce(MPI_IN_PLACE, my_dhidden.data(), static_cast<int>(my_dhidden.size()), MPI_FLOAT, MPI_SUM, g.tp);
    check_values("dhidden", my_dhidden.data(), dhidden.data() + sh.t0 * D, T * D, g.tp_size == 1, 1e-5);
  }
}

TEST_CASE("distributed: a bad input on one rank stops every rank") {
  using P = policy<reduction::batch_invariant, precision<float, float>, chunk<64>>;
  const grid& g = the_grid();
  const loss_config cfg;
  auto p = global_problem(4242, 3 * 64 + 13, false);
  const auto whole = support::run_fused<P>(p, cfg);
  const share sh = my_share(p, 4242, 64);
  {
    local_run<P> mine(whole, p, sh);
    if (g.rank == g.size - 1) mine.adv.push_back(0.f);  // a wrong size on the last rank only
    CHECK_THROWS_AS(grpokit::host::fused_loss<P>(mine.input(), mine.batch(), cfg,
                                                 {mine.dlogits.data(), mine.T, mine.V, mine.V}, layout()),
                    grpokit::error);
  }
  {
    local_run<P> mine(whole, p, sh);
    if (g.rank == 0 && mine.T > 0) mine.logits[0] = std::numeric_limits<float>::quiet_NaN();  // data, found late
    const grpokit::mpi_communicator world(MPI_COMM_WORLD);
    if (grpokit::detail::gather_value(world, mine.T)[0] > 0)
      CHECK_THROWS_AS(grpokit::host::fused_loss<P>(mine.input(), mine.batch(), cfg,
                                                   {mine.dlogits.data(), mine.T, mine.V, mine.V}, layout()),
                      grpokit::error);
  }
  {
    // the TP ranks of a group disagree about a target: every rank of the job throws
    local_run<P> mine(whole, p, sh);
    if (g.tp_rank == g.tp_size - 1 && mine.T > 0) mine.targets[0] = (mine.targets[0] + 1) % p.V;
    const grpokit::mpi_communicator world(MPI_COMM_WORLD);
    std::vector<float> lse(mine.logp.size());
    if (g.tp_size > 1 && grpokit::detail::sum_over_ranks(world, mine.T) > 0)
      CHECK_THROWS_AS(grpokit::host::token_logprobs<P>(mine.input(), cfg, {mine.logp, mine.entropy, lse}, layout()),
                      grpokit::error);
  }
}
