// The data-parallel device entry points (device/distributed.cuh) under MPI, each rank on the
// device (a GPU, or the simulated GPU: one simulator per process), through staged_communicator
// over mpi_communicator. Every rank builds the same global problem (same seed), runs the
// one-process device call on the whole batch itself, then its share of the data-parallel call
// (random sequence cuts, empty shares included), and compares: the loss and metrics bitwise under
// batch_invariant and within rounding otherwise; dlogits, logp and entropy of its own rows bitwise
// (the same kernels on the same rows, integer normalisers), for every reduction order. policy_loss
// alone runs on a stream of its own. A rejected input on one rank, or a data error
// found on the device of one rank, throws on every rank. Exit 77 (skipped) without a device
// (tests/mpi/main.cpp with GRPOKIT_MPI_DEVICE_TEST).
#include <cuda_runtime.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <grpokit/comm/mpi.hpp>
#include <grpokit/comm/staged.cuh>
#include <grpokit/device/distributed.cuh>

#include "../catch.hpp"
#include "../device/device_support.cuh"
#include "../support.hpp"

namespace {

using device_support::buffer;
using device_support::device_problem;
using grpokit::loss_config;

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
int world_size() {
  int n = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}
auto layout() {
  return grpokit::data_parallel(grpokit::staged_communicator<grpokit::mpi_communicator>(grpokit::mpi_communicator(MPI_COMM_WORLD)));
}

ref::problem global_problem(std::uint64_t seed, std::int64_t V) { return support::packed_problem(seed, V, 9, 7); }

// Sequences [s0, s1) of p as a problem of its own (the rank's share).
ref::problem share_of(const ref::problem& p, std::int64_t s0, std::int64_t s1) {
  ref::problem q;
  const std::int64_t t0 = p.b.seq_offsets[s0], t1 = p.b.seq_offsets[s1];
  q.V = p.V;
  q.T = t1 - t0;
  q.S = s1 - s0;
  q.logits.assign(p.logits.begin() + t0 * p.V, p.logits.begin() + t1 * p.V);
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
  return q;
}

// The sequence cuts of the ranks (the same on every rank): random, empty shares allowed.
std::vector<std::int64_t> cuts(std::uint64_t seed, std::int64_t S, int ranks) {
  std::mt19937_64 rng(seed * 7919);
  std::uniform_int_distribution<std::int64_t> d(0, S);
  std::vector<std::int64_t> c{0};
  for (int i = 0; i + 1 < ranks; ++i) c.push_back(d(rng));
  std::sort(c.begin() + 1, c.end());
  c.push_back(S);
  return c;
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b, std::int64_t offset) {
  return std::memcmp(a.data(), b.data() + offset, a.size() * sizeof(T)) == 0;
}
bool close(double a, double b, double tol) { return std::fabs(a - b) <= tol * (1 + std::fabs(b)); }

struct device_run {
  grpokit::loss_result result;
  std::vector<float> logp, entropy;
};

// fused_loss of P on the whole batch (one process) and on this rank's share (data parallel).
template <class P>
void compare_fused(bool bitwise) {
  using S = grpokit::storage_t<P>;
  using R = grpokit::accum_t<P>;
  static_assert(std::is_same<R, float>::value, "the test keeps float outputs");
  const int rank = world_rank(), ranks = world_size();
  std::vector<loss_config> cfgs(3);
  cfgs[0].kl = grpokit::kl_estimator::k3;
  cfgs[0].kl_coef = 0.05;
  cfgs[0].entropy_coef = 0.01;
  cfgs[0].is = grpokit::is_correction::token_truncate;
  cfgs[1].obj = grpokit::objective::gspo;
  cfgs[1].agg = grpokit::aggregation::seq_mean_token_mean;
  cfgs[2].agg = grpokit::aggregation::token_sum;
  cfgs[2].kl = grpokit::kl_estimator::k2;
  cfgs[2].kl_coef = 0.1;
  std::uint64_t seed = 500;
  for (const loss_config& cfg : cfgs) {
    ++seed;
    INFO("policy " << support::describe<P>() << ", seed " << seed << ", rank " << rank << " of " << ranks);
    const ref::problem p = global_problem(seed, 2 * 32 + 5);
    const auto c = cuts(seed, p.S, ranks);
    const ref::problem q = share_of(p, c[rank], c[rank + 1]);
    const std::int64_t t0 = p.b.seq_offsets[c[rank]];

    device_problem<P> whole(p);
    buffer<S> dwhole(static_cast<std::size_t>(p.T * p.V));
    buffer<R> logp_w(p.T), ent_w(p.T);
    const auto want = grpokit::device::fused_loss<P>(whole.input(), whole.batch(), cfg, {dwhole.data(), p.T, p.V, p.V},
                                                     whole.ws(), whole.ws_bytes(), 0, {logp_w.span(), ent_w.span()});

    // every rank plans for the largest share
    std::int64_t most_tokens = 0, most_seqs = 0;
    for (int r = 0; r < ranks; ++r) {
      most_tokens = std::max(most_tokens, p.b.seq_offsets[c[r + 1]] - p.b.seq_offsets[c[r]]);
      most_seqs = std::max(most_seqs, c[r + 1] - c[r]);
    }
    const grpokit::device::shape planned{most_tokens, p.V, most_seqs};
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
    }
    CHECK(got.metrics.tokens == want.metrics.tokens);
    CHECK(got.metrics.seqs == want.metrics.seqs);
    CHECK(got.metrics.tokens_kept == want.metrics.tokens_kept);
    // the rows: the same kernels on the same rows, the global normalisers
    CHECK(same_bits(logp_m.host(), logp_w.host(), t0));
    CHECK(same_bits(ent_m.host(), ent_w.host(), t0));
    CHECK(same_bits(dmine.host(), dwhole.host(), t0 * p.V));  // the normalisers are integers: any order
  }
}

using grpokit::chunk;
using grpokit::policy;
using grpokit::precision;
namespace reduction = grpokit::reduction;

}  // namespace

TEST_CASE("device data parallel fused_loss: bitwise one process under batch_invariant") {
  compare_fused<policy<reduction::batch_invariant, precision<float, float>, chunk<32>>>(true);
}

TEST_CASE("device data parallel fused_loss: within rounding of one process otherwise") {
  compare_fused<policy<reduction::deterministic, precision<float, float>, chunk<32>>>(false);
}

TEST_CASE("device data parallel policy_loss on a stream of its own: bitwise one process, a rejection on every rank") {
  using P = policy<reduction::batch_invariant, precision<float, float>>;
  const int rank = world_rank(), ranks = world_size();
  cudaStream_t stream;
  REQUIRE(cudaStreamCreate(&stream) == cudaSuccess);
  const ref::problem p = global_problem(909, 16);
  const auto c = cuts(909, p.S, ranks);
  const ref::problem q = share_of(p, c[rank], c[rank + 1]);
  loss_config cfg{};
  cfg.kl = grpokit::kl_estimator::k3;
  cfg.kl_coef = 0.05;
  cfg.entropy_coef = 0.01;
  // the current policy: the rollout log-probs, entropies from the old ones
  device_problem<P> whole(p), mine(q);
  auto entropy_of = [](const device_problem<P>& d) {
    auto h = d.logp_old.host();
    for (auto& x : h) x = -x;
    return h;
  };
  const buffer<float> ent_w(entropy_of(whole)), ent_m(entropy_of(mine));
  buffer<float> dlogp_w(p.T), dent_w(p.T), dlogp_m(q.T), dent_m(q.T);
  const auto want = grpokit::device::policy_loss<P>({whole.logp_rollout.cspan(), ent_w.cspan()}, whole.batch(), cfg,
                                                    {dlogp_w.span(), dent_w.span()}, whole.ws(), whole.ws_bytes(), stream);
  std::int64_t most = 0;
  for (int r = 0; r < ranks; ++r) most = std::max(most, c[r + 1] - c[r]);
  const grpokit::device::shape planned{p.T, 0, most};
  const auto lay = layout();
  buffer<unsigned char> ws(grpokit::device::workspace_bytes<P>(planned, lay));
  const auto got = grpokit::device::policy_loss<P>({mine.logp_rollout.cspan(), ent_m.cspan()}, mine.batch(), cfg,
                                                   {dlogp_m.span(), dent_m.span()}, ws.data(), ws.size(), planned, lay,
                                                   stream);
  CHECK(std::memcmp(&got, &want, sizeof(got)) == 0);
  const std::int64_t t0 = p.b.seq_offsets[c[rank]];
  CHECK(same_bits(dlogp_m.host(), dlogp_w.host(), t0));
  CHECK(same_bits(dent_m.host(), dent_w.host(), t0));
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

TEST_CASE("device data parallel: an error on one rank throws on every rank") {
  using P = policy<reduction::batch_invariant, precision<float, float>, chunk<32>>;
  const int rank = world_rank(), ranks = world_size();
  const ref::problem p = global_problem(77, 40);
  const auto c = cuts(77, p.S, ranks);
  const auto lay = layout();
  const grpokit::device::shape planned{p.T + 1, p.V, p.S + 1};  // room for the appended token
  buffer<unsigned char> ws(grpokit::device::workspace_bytes<P>(planned, lay));
  const loss_config cfg{};
  for (const int bad_rank : {0, ranks - 1}) {
    for (const bool on_device : {false, true}) {
      INFO("rank " << rank << " of " << ranks << ", bad rank " << bad_rank << (on_device ? ", bad target" : ", bad shape"));
      ref::problem q = share_of(p, c[rank], c[rank + 1]);
      if (rank == bad_rank && on_device) {  // found by a kernel: a target out of range (a token appended)
        q.logits.resize(q.logits.size() + static_cast<std::size_t>(q.V), 0.0);
        q.targets.push_back(q.V + 3);
        ++q.T;
        if (q.S == 0) {
          q.S = 1;
          q.b.seq_offsets.push_back(0);
          q.b.adv.push_back(0.5L);
          if (!q.b.seq_mask.empty()) q.b.seq_mask.push_back(1);
        }
        q.b.seq_offsets.back() = q.T;
        for (auto* v : {&q.b.logp_old, &q.b.logp_ref, &q.b.logp_rollout})
          if (!v->empty()) v->push_back(-1.0L);
        if (!q.b.token_mask.empty()) q.b.token_mask.push_back(1);
      }
      device_problem<P> mine(q);
      buffer<float> dmine(static_cast<std::size_t>(q.T * q.V) + 1);
      // a bad shape: dlogits with one column too few on the bad rank (rejected on the host)
      const std::int64_t dcols = rank == bad_rank && !on_device ? q.V - 1 : q.V;
      bool threw = false;
      try {
        grpokit::device::fused_loss<P>(mine.input(), mine.batch(), cfg, {dmine.data(), q.T, dcols, dcols}, ws.data(),
                                       ws.size(), planned, lay);
      } catch (const grpokit::error& e) {
        threw = true;
        const std::string what = e.what();
        INFO(what);
        if (rank != bad_rank)
          CHECK(what.find("data-parallel rank " + std::to_string(bad_rank)) != std::string::npos);
        else
          CHECK(what.find(on_device ? "out of range" : "dlogits") != std::string::npos);
      }
      CHECK(threw);
    }
  }
}
