// Communicators without MPI: single_process, the callable adapter's checks, and an in-process job
// of threads joined by a callable_communicator (the way a runtime grpokit does not know plugs in),
// running the data- and vocabulary-parallel entry points against one process. tests/mpi covers
// the full DP x TP grids under MPI.
#include <cmath>
#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <limits>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include <grpokit/comm/callable.hpp>
#include <grpokit/host/distributed.hpp>

#include "catch.hpp"
#include "support.hpp"

namespace {

// R threads that all_gather through shared memory: each writes its bytes to its slot, waits for
// the others, copies every slot, waits again (so that a slot is not overwritten while read).
class thread_job {
 public:
  explicit thread_job(int ranks) : ranks_(ranks) {}

  grpokit::callable_communicator communicator(int rank) {
    return {rank, ranks_, [this, rank](const void* send, void* recv, std::size_t bytes) {
              if (rank == 0) slots_.assign(static_cast<std::size_t>(ranks_) * bytes, 0);
              wait();
              if (bytes > 0) std::memcpy(slots_.data() + static_cast<std::size_t>(rank) * bytes, send, bytes);
              wait();
              if (bytes > 0) std::memcpy(recv, slots_.data(), slots_.size());
              wait();
            }};
  }

  // Runs body(rank) on every rank's thread; rethrows nothing (a failed CHECK is recorded by Catch2
  // only from the main thread, so bodies return what they found).
  template <class F>
  void run(F&& body) {
    std::vector<std::thread> threads;
    for (int r = 0; r < ranks_; ++r) threads.emplace_back([&, r] { body(r); });
    for (auto& t : threads) t.join();
  }

 private:
  void wait() {
    std::unique_lock<std::mutex> lock(m_);
    const long long round = round_;
    if (++arrived_ == ranks_) {
      arrived_ = 0;
      ++round_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return round_ != round; });
    }
  }
  int ranks_;
  std::vector<unsigned char> slots_;
  std::mutex m_;
  std::condition_variable cv_;
  int arrived_ = 0;
  long long round_ = 0;
};

using P = grpokit::policy<grpokit::reduction::batch_invariant, grpokit::precision<float, float>, grpokit::chunk<16>>;

}  // namespace

TEST_CASE("single_process and callable_communicator") {
  const grpokit::single_process one;
  const double x = 2.5;
  double y = 0;
  one.all_gather(&x, &y, sizeof x);
  CHECK(y == 2.5);
  CHECK(one.rank() == 0);
  CHECK(one.size() == 1);
  auto copy = [](const void* s, void* r, std::size_t n) { std::memcpy(r, s, n); };
  REQUIRE_ERROR(grpokit::callable_communicator(2, 2, copy), "rank 2 is not in [0, size = 2)");
  REQUIRE_ERROR(grpokit::callable_communicator(0, 1, nullptr), "the all_gather callable is empty");
  static_assert(grpokit::detail::is_communicator<grpokit::callable_communicator>::value);
  static_assert(!grpokit::detail::is_communicator<int>::value);
}

TEST_CASE("threads as data-parallel ranks: fused_loss and compute_advantages bitwise one process") {
  for (const int ranks : {1, 2, 3}) {
    std::mt19937_64 rng(31 + ranks);
    auto p = ref::make_problem(rng, {4, 0, 7, 1, 5, 3, 6}, 37);
    ref::add_policies(rng, p, std::vector<ref::ld>(static_cast<std::size_t>(p.T), -2.0L), 0.3);
    grpokit::loss_config cfg;
    cfg.kl = grpokit::kl_estimator::k3;
    cfg.entropy_coef = 0.01;
    cfg.agg = grpokit::aggregation::seq_mean_token_mean;
    const auto whole = support::run_fused<P>(p, cfg);
    const std::vector<std::int64_t> cut = ranks == 1   ? std::vector<std::int64_t>{0, 7}
                                          : ranks == 2 ? std::vector<std::int64_t>{0, 3, 7}
                                                       : std::vector<std::int64_t>{0, 2, 2, 7};  // an empty rank
    std::vector<grpokit::loss_result> got(static_cast<std::size_t>(ranks));
    std::vector<std::vector<float>> dlogits(static_cast<std::size_t>(ranks));
    thread_job job(ranks);
    job.run([&](int r) {
      const std::int64_t s0 = cut[r], s1 = cut[r + 1], t0 = p.b.seq_offsets[s0], t1 = p.b.seq_offsets[s1];
      const std::int64_t T = t1 - t0, V = p.V;
      std::vector<float> logits(whole.logits.begin() + t0 * V, whole.logits.begin() + t1 * V);
      std::vector<std::int64_t> targets(p.targets.begin() + t0, p.targets.begin() + t1), off;
      for (std::int64_t s = s0; s <= s1; ++s) off.push_back(p.b.seq_offsets[s] - t0);
      auto rows = [&](const std::vector<float>& v) { return std::vector<float>(v.begin() + t0, v.begin() + t1); };
      const std::vector<float> adv(whole.adv.begin() + s0, whole.adv.begin() + s1),
          old = rows(whole.logp_old), refp = rows(whole.logp_ref), roll = rows(whole.logp_rollout);
      const std::vector<std::uint8_t> tm(whole.token_mask.begin() + t0, whole.token_mask.begin() + t1),
          sm(whole.seq_mask.begin() + s0, whole.seq_mask.begin() + s1);
      auto& dz = dlogits[static_cast<std::size_t>(r)];
      dz.resize(logits.size());
      got[static_cast<std::size_t>(r)] =
          grpokit::host::fused_loss<P>({{logits.data(), T, V, V}, targets, {}}, {off, adv, old, refp, roll, tm, sm},
                                       cfg, {dz.data(), T, V, V}, grpokit::data_parallel(job.communicator(r)));
    });
    for (int r = 0; r < ranks; ++r) {
      INFO("ranks " << ranks << ", rank " << r);
      CHECK(std::memcmp(&got[static_cast<std::size_t>(r)], &whole.result, sizeof(grpokit::loss_result)) == 0);
      const std::int64_t t0 = p.b.seq_offsets[cut[r]];
      const auto& mine = dlogits[static_cast<std::size_t>(r)];
      CHECK(std::equal(mine.begin(), mine.end(), whole.dlogits.begin() + t0 * p.V,
                       [](float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }));
    }
  }
}

TEST_CASE("threads as vocabulary-parallel ranks: token_logprobs bitwise one process on chunk-aligned slices") {
  std::mt19937_64 rng(5);
  auto p = ref::make_problem(rng, {3, 5, 2}, 16 * 4 + 3);
  const auto whole = support::run_fused<P>(p, grpokit::loss_config{});
  const std::vector<std::int64_t> cols{0, 16, 48, p.V};  // on multiples of chunk<16>
  const int ranks = 3;
  std::vector<std::vector<float>> logp(ranks), ent(ranks), lse(ranks);
  thread_job job(ranks);
  job.run([&](int r) {
    const std::int64_t c0 = cols[r], Vr = cols[r + 1] - c0;
    std::vector<float> slice(static_cast<std::size_t>(p.T * Vr));
    for (std::int64_t t = 0; t < p.T; ++t)
      for (std::int64_t v = 0; v < Vr; ++v)
        slice[static_cast<std::size_t>(t * Vr + v)] = whole.logits[static_cast<std::size_t>(t * p.V + c0 + v)];
    logp[r].resize(p.T);
    ent[r].resize(p.T);
    lse[r].resize(p.T);
    grpokit::host::token_logprobs<P>({{slice.data(), p.T, Vr, Vr}, p.targets, {}}, grpokit::loss_config{},
                                     {logp[r], ent[r], lse[r]}, grpokit::vocab_parallel(job.communicator(r)));
  });
  for (int r = 0; r < ranks; ++r) {
    INFO("rank " << r);
    CHECK(support::same_bits(logp[r], whole.logp));
    CHECK(support::same_bits(ent[r], whole.entropy));
  }
}

TEST_CASE("threads: a bad input on one rank throws on every rank") {
  const int ranks = 3;
  std::vector<int> threw(ranks, 0);
  thread_job job(ranks);
  job.run([&](int r) {
    std::vector<double> rewards{1, 0, 1};
    const std::vector<std::int64_t> groups{0, 4, 9};
    std::vector<double> adv(3);
    std::vector<std::uint8_t> keep(r == 1 ? 2 : 3);  // the wrong size on rank 1 only
    try {
      grpokit::host::compute_advantages<grpokit::policy<grpokit::precision<double, double>>>(
          {rewards, groups, {}, {}}, {}, {adv, keep}, grpokit::data_parallel(job.communicator(r)));
    } catch (const grpokit::error&) {
      threw[static_cast<std::size_t>(r)] = 1;
    }
  });
  CHECK(threw == std::vector<int>{1, 1, 1});
}

TEST_CASE("threads: a data-parallel rank with no sequences, and per-sequence inputs (ess_scaled)") {
  using E = grpokit::policy<grpokit::precision<double, double>, grpokit::baseline::ess_scaled>;
  const std::vector<double> rewards{1, 0, 0.5, 1, 0, 0, 1, 0.25, 1}, lr{0.1, -0.2, 0.3, 0, 0.5, -1, 0.2, 0.1, 0};
  const std::vector<std::int64_t> groups{0, 4, 9}, cut{0, 0, 4, 9};  // rank 0 holds nothing
  std::vector<double> want(9);
  std::vector<std::uint8_t> want_keep(9);
  const auto want_st = grpokit::host::compute_advantages<E>({rewards, groups, lr, {}}, {}, {want, want_keep});
  const int ranks = 3;
  std::vector<std::vector<double>> adv(ranks);
  std::vector<grpokit::advantage_stats> st(ranks);
  std::vector<int> threw(ranks, 0);
  thread_job job(ranks);
  job.run([&](int r) {
    const std::vector<double> my_r(rewards.begin() + cut[r], rewards.begin() + cut[r + 1]),
        my_lr(lr.begin() + cut[r], lr.begin() + cut[r + 1]);
    adv[r].resize(my_r.size());
    std::vector<std::uint8_t> keep(my_r.size());
    try {
      st[r] = grpokit::host::compute_advantages<E>({my_r, groups, my_lr, {}}, {}, {adv[r], keep},
                                                   grpokit::data_parallel(job.communicator(r)));
    } catch (const grpokit::error&) {
      threw[r] = 1;
    }
  });
  CHECK(threw == std::vector<int>{0, 0, 0});
  for (int r = 0; r < ranks; ++r) {
    INFO("rank " << r);
    CHECK(std::memcmp(&st[r], &want_st, sizeof want_st) == 0);
    CHECK(adv[r] == std::vector<double>(want.begin() + cut[r], want.begin() + cut[r + 1]));
  }
}

TEST_CASE("threads: ranks that disagree about group_baseline all throw") {
  using X = grpokit::policy<grpokit::precision<double, double>, grpokit::baseline::external>;
  const int ranks = 2;
  std::vector<int> threw(ranks, 0);
  thread_job job(ranks);
  job.run([&](int r) {
    const std::vector<double> rewards{1, 0};
    const std::vector<std::int64_t> groups{0, 2, 4};
    const std::vector<double> base{0.5, r == 1 ? std::nan("") : 0.5};  // NaN on rank 1 only
    std::vector<double> adv(2);
    std::vector<std::uint8_t> keep(2);
    try {
      grpokit::host::compute_advantages<X>({rewards, groups, {}, {}, base}, {}, {adv, keep},
                                           grpokit::data_parallel(job.communicator(r)));
    } catch (const grpokit::error&) {
      threw[r] = 1;
    }
  });
  CHECK(threw == std::vector<int>{1, 1});
}

TEST_CASE("threads: a vectorised vocabulary slice whose scaled columns are all -inf") {
  // fast float rows: the slice's own max is -inf (finite logits near -FLT_MAX at temperature 0.5);
  // its partial must be empty, not NaN, as the whole row in one process
  using F = grpokit::policy<grpokit::reduction::fast, grpokit::precision<float, float>, grpokit::chunk<16>>;
  const std::int64_t T = 3, V = 32;
  std::vector<float> logits(T * V);
  std::mt19937_64 rng(4);
  std::normal_distribution<float> n(0, 1);
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t v = 0; v < V; ++v) logits[t * V + v] = v < 16 ? n(rng) : -std::numeric_limits<float>::max();
  const std::vector<std::int64_t> targets{3, 7, 15};
  grpokit::loss_config cfg;
  cfg.temperature = 0.5;
  std::vector<float> logp(T), ent(T), lse(T);
  grpokit::host::token_logprobs<F>({{logits.data(), T, V, V}, targets, {}}, cfg, {logp, ent, lse});
  const int ranks = 2;
  std::vector<std::vector<float>> got(ranks, std::vector<float>(T)), got_ent(ranks, std::vector<float>(T));
  thread_job job(ranks);
  job.run([&](int r) {
    std::vector<float> slice(T * 16), l(T);
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t v = 0; v < 16; ++v) slice[t * 16 + v] = logits[t * V + r * 16 + v];
    grpokit::host::token_logprobs<F>({{slice.data(), T, 16, 16}, targets, {}}, cfg, {got[r], got_ent[r], l},
                                     grpokit::vocab_parallel(job.communicator(r)));
  });
  for (int r = 0; r < ranks; ++r)
    for (std::int64_t t = 0; t < T; ++t) {
      CHECK(got[r][t] == Approx(logp[t]).epsilon(1e-6));
      CHECK(got_ent[r][t] == Approx(ent[t]).epsilon(1e-5).margin(1e-6));
    }
}

TEST_CASE("threads as vocabulary-parallel ranks: fused_loss's and token_logprobs' sum_p2 is the sum of the slices") {
  using Q = grpokit::policy<grpokit::reduction::batch_invariant, grpokit::precision<double, double>,
                            grpokit::chunk<16>, grpokit::mask::vocab_prune>;
  std::mt19937_64 rng(9);
  auto p = ref::make_problem(rng, {3, 5, 2}, 16 * 4 + 3);
  ref::add_policies(rng, p, std::vector<ref::ld>(static_cast<std::size_t>(p.T), -2.0L), 0.3);
  grpokit::loss_config cfg;
  cfg.prune_rho = 0.05;  // the threshold comes from the whole row's max
  support::host_run<Q> h;
  h.logits = support::to_storage<double>(p.logits);
  support::load_batch(h, p);
  std::vector<double> dz(h.logits.size()), whole(static_cast<std::size_t>(p.T));
  grpokit::host::fused_loss<Q>(h.input(p), h.batch(p), cfg, {dz.data(), p.T, p.V, p.V}, {{}, {}, whole});
  for (const int ranks : {1, 3}) {
    const std::vector<std::int64_t> cols = ranks == 1 ? std::vector<std::int64_t>{0, p.V}
                                                      : std::vector<std::int64_t>{0, 16, 48, p.V};
    std::vector<std::vector<double>> got(static_cast<std::size_t>(ranks)), from_logprobs(got.size());
    std::vector<int> threw(static_cast<std::size_t>(ranks), 0);
    thread_job job(ranks);
    job.run([&](int r) {
      const std::int64_t c0 = cols[r], Vr = cols[r + 1] - c0;
      std::vector<double> slice(static_cast<std::size_t>(p.T * Vr)), d(slice.size());
      for (std::int64_t t = 0; t < p.T; ++t)
        for (std::int64_t v = 0; v < Vr; ++v) slice[t * Vr + v] = h.logits[t * p.V + c0 + v];
      auto& mine = got[static_cast<std::size_t>(r)];
      mine.assign(static_cast<std::size_t>(p.T), -1);
      const auto layout = grpokit::vocab_parallel(job.communicator(r));
      grpokit::host::fused_loss<Q>({{slice.data(), p.T, Vr, Vr}, p.targets, {}}, h.batch(p), cfg,
                                   {d.data(), p.T, Vr, Vr}, layout, {{}, {}, mine});
      std::vector<double> lp(static_cast<std::size_t>(p.T)), lse(lp.size());
      auto& sp = from_logprobs[static_cast<std::size_t>(r)];
      sp.assign(lp.size(), -1);
      grpokit::host::token_logprobs<Q>({{slice.data(), p.T, Vr, Vr}, p.targets, {}}, cfg, {lp, {}, lse, sp}, layout);
      try {  // rank 0 alone asks for it: every rank throws, none waits forever
        std::vector<double> only(static_cast<std::size_t>(r == 0 ? p.T : 0));
        grpokit::host::fused_loss<Q>({{slice.data(), p.T, Vr, Vr}, p.targets, {}}, h.batch(p), cfg,
                                     {d.data(), p.T, Vr, Vr}, layout, {{}, {}, only});
      } catch (const grpokit::error&) {
        threw[static_cast<std::size_t>(r)] = 1;
      }
    });
    for (int r = 0; r < ranks; ++r) {
      INFO("ranks " << ranks << ", rank " << r);
      if (ranks == 1) CHECK(support::same_bits(got[0], whole));  // one slice: the single-process order
      CHECK(support::same_bits(from_logprobs[static_cast<std::size_t>(r)], got[static_cast<std::size_t>(r)]));
      for (std::int64_t t = 0; t < p.T; ++t)
        CHECK(support::close(got[static_cast<std::size_t>(r)][t], whole[t], 1e-14, 1e-16));
      CHECK(threw[static_cast<std::size_t>(r)] == (ranks > 1 ? 1 : 0));
    }
  }
}

TEST_CASE("threads as vocabulary-parallel ranks: fused_linear_loss's lm_head_norms add over the slices") {
  using Q = grpokit::policy<grpokit::precision<double, double>, grpokit::chunk<16>>;
  const std::int64_t T = 11, V = 16 * 3 + 5, D = 4;
  std::mt19937_64 rng(13);
  std::normal_distribution<double> n(0, 1);
  std::vector<double> hidden(T * D), weight(V * D);
  for (auto& x : hidden) x = n(rng);
  for (auto& x : weight) x = n(rng);
  std::vector<std::int64_t> targets(T), offsets{0, 3, 3, 7, 11}, groups{0, 2, 4};
  for (std::int64_t t = 0; t < T; ++t) targets[t] = (t * 7) % V;
  std::vector<double> adv{1, -0.5, 0.25, -1};
  grpokit::rollout_batch<double> batch;
  batch.seq_offsets = offsets;
  batch.adv = adv;
  const grpokit::loss_config cfg;
  // sum_p2 as well: fused_linear_loss's vocabulary-parallel path of it
  auto run = [&](const auto& layout, std::int64_t c0, std::int64_t c1, std::vector<double>& rollout,
                 std::vector<double>& group, double& b, std::vector<double>& sum_p2) {
    std::vector<double> w(weight.begin() + c0 * D, weight.begin() + c1 * D), dw(w.size());
    grpokit::linear_grads<double, double> g;
    g.dweight_acc = {dw.data(), c1 - c0, D, D};
    rollout.assign(4, -1);
    group.assign(2, -1);
    sum_p2.assign(T, -1);
    grpokit::host::fused_linear_loss<Q>({{hidden.data(), T, D, D}, {w.data(), c1 - c0, D, D}, {}, targets, {}}, batch,
                                        cfg, 5, g, layout, {{}, {}, sum_p2}, {groups, rollout, group, &b});
  };
  std::vector<double> want_r, want_g, want_p2;
  double want_b = 0;
  run(grpokit::parallel_layout<grpokit::single_process, grpokit::single_process>{}, 0, V, want_r, want_g, want_b,
      want_p2);
  const std::vector<std::int64_t> cols{0, 16, 48, V};
  const int ranks = 3;
  std::vector<std::vector<double>> got_r(ranks), got_g(ranks), got_p2(ranks);
  std::vector<double> got_b(ranks);
  thread_job job(ranks);
  job.run([&](int r) {
    run(grpokit::vocab_parallel(job.communicator(r)), cols[r], cols[r + 1], got_r[r], got_g[r], got_b[r], got_p2[r]);
  });
  for (int r = 0; r < ranks; ++r) {
    INFO("rank " << r);
    for (std::int64_t t = 0; t < T; ++t) CHECK(support::close(got_p2[r][t], want_p2[t], 1e-13, 1e-300));
    for (std::size_t s = 0; s < 4; ++s) CHECK(support::close(got_r[r][s], want_r[s], 1e-12, 1e-300));
    for (std::size_t k = 0; k < 2; ++k) CHECK(support::close(got_g[r][k], want_g[k], 1e-12, 1e-300));
    CHECK(support::close(got_b[r], want_b, 1e-12, 1e-300));
    CHECK(got_r[r][1] == 0.0);  // the empty sequence
  }
  CHECK(want_b > 0);
  // data parallel: a group's and the batch's sums would span ranks; refused on every rank
  std::vector<int> threw(2, 0);
  thread_job dp(2);
  dp.run([&](int r) {
    std::vector<double> ro, gr, q;
    double b = 0;
    try {
      run(grpokit::data_parallel(dp.communicator(r)), 0, V, ro, gr, b, q);
    } catch (const grpokit::error&) {
      threw[static_cast<std::size_t>(r)] = 1;
    }
  });
  CHECK(threw == std::vector<int>{1, 1});
}

namespace {

// fused_loss over R vocabulary slices (cols: the slices' bounds) under the sampler's support: every
// rank's loss, log-probs, entropy and dlogits columns against one process's (bitwise where `exact`).
template <class Q>
void support_over_slices(std::uint64_t seed, const std::vector<std::int64_t>& cols, const grpokit::loss_config& cfg,
                         bool exact) {
  using R = typename Q::accum_type;
  std::mt19937_64 rng(seed);
  auto p = ref::make_problem(rng, {3, 5, 2}, cols.back());
  ref::add_policies(rng, p, std::vector<ref::ld>(static_cast<std::size_t>(p.T), -2.0L), 0.3);
  support::host_run<Q> h;
  h.logits = support::to_storage<typename Q::storage_type>(p.logits);
  support::load_batch(h, p);
  std::vector<typename Q::storage_type> dz(h.logits.size());
  std::vector<R> logp(static_cast<std::size_t>(p.T)), ent(logp.size()), sp(logp.size());
  const auto whole =
      grpokit::host::fused_loss<Q>(h.input(p), h.batch(p), cfg, {dz.data(), p.T, p.V, p.V}, {logp, ent, sp});
  REQUIRE(whole.metrics.masked_tokens_vocab_prune > 0);  // the support narrows some sampled tokens out
  const int ranks = static_cast<int>(cols.size()) - 1;
  std::vector<grpokit::loss_result> res(static_cast<std::size_t>(ranks));
  std::vector<std::vector<R>> lp(res.size()), en(res.size()), s2(res.size());
  std::vector<std::vector<typename Q::storage_type>> dx(res.size());
  thread_job job(ranks);
  job.run([&](int r) {
    const std::int64_t c0 = cols[r], Vr = cols[r + 1] - c0;
    std::vector<typename Q::storage_type> slice(static_cast<std::size_t>(p.T * Vr));
    for (std::int64_t t = 0; t < p.T; ++t)
      for (std::int64_t v = 0; v < Vr; ++v) slice[t * Vr + v] = h.logits[t * p.V + c0 + v];
    dx[r].resize(slice.size());
    for (auto* v : {&lp[r], &en[r], &s2[r]}) v->assign(static_cast<std::size_t>(p.T), R(-1));
    res[r] = grpokit::host::fused_loss<Q>({{slice.data(), p.T, Vr, Vr}, p.targets, {}}, h.batch(p), cfg,
                                          {dx[r].data(), p.T, Vr, Vr}, grpokit::vocab_parallel(job.communicator(r)),
                                          {lp[r], en[r], s2[r]});
  });
  const double tol = std::is_same<R, float>::value ? 2e-5 : 1e-13;
  for (int r = 0; r < ranks; ++r) {
    INFO("seed " << seed << ", rank " << r << " of " << ranks << ", top_k " << cfg.top_k << ", top_p " << cfg.top_p);
    // the support is exact in any split: the same tokens fall outside it
    CHECK(res[r].metrics.masked_tokens_vocab_prune == whole.metrics.masked_tokens_vocab_prune);
    CHECK(res[r].metrics.tokens_kept == whole.metrics.tokens_kept);
    for (std::int64_t t = 0; t < p.T; ++t) {
      CHECK((lp[r][t] == -std::numeric_limits<R>::infinity()) == (logp[t] == -std::numeric_limits<R>::infinity()));
      if (logp[t] == -std::numeric_limits<R>::infinity()) continue;
      CHECK(support::close(lp[r][t], logp[t], tol, tol));
      CHECK(support::close(en[r][t], ent[t], tol, tol));
      CHECK(support::close(s2[r][t], sp[t], tol, tol));
    }
    const std::int64_t c0 = cols[r], Vr = cols[r + 1] - c0;
    std::vector<typename Q::storage_type> mine(static_cast<std::size_t>(p.T * Vr));
    for (std::int64_t t = 0; t < p.T; ++t)
      for (std::int64_t v = 0; v < Vr; ++v) mine[t * Vr + v] = dz[t * p.V + c0 + v];
    if (exact) {
      CHECK(res[r].loss == whole.loss);
      CHECK(support::same_bits(lp[r], logp));
      CHECK(support::same_bits(en[r], ent));
      CHECK(support::same_bits(dx[r], mine));
    } else {
      CHECK(support::close(res[r].loss, whole.loss, tol, tol));
      for (std::size_t i = 0; i < mine.size(); ++i) CHECK(support::close(dx[r][i], mine[i], tol, tol));
    }
  }
}

}  // namespace

TEST_CASE("threads as vocabulary-parallel ranks: the sampler's support (top_k, top_p) is one process's") {
  using Q = grpokit::policy<grpokit::reduction::batch_invariant, grpokit::precision<float, float>,
                            grpokit::chunk<16>>;
  using Pruned = grpokit::policy<grpokit::reduction::batch_invariant, grpokit::precision<double, double>,
                                 grpokit::chunk<16>, grpokit::mask::vocab_prune>;
  using Vectorised = grpokit::policy<grpokit::precision<float, float>, grpokit::chunk<16>>;
  std::uint64_t seed = 40;
  for (const auto& kp : std::vector<std::pair<std::int64_t, double>>{{5, 1.0}, {0, 0.7}, {12, 0.6}, {1, 1.0}}) {
    grpokit::loss_config cfg;
    cfg.top_k = kp.first;
    cfg.top_p = kp.second;
    support_over_slices<Q>(++seed, {0, 16, 48, 67}, cfg, true);  // chunk-aligned slices: bit for bit
    support_over_slices<Q>(++seed, {0, 67}, cfg, true);
    support_over_slices<Vectorised>(++seed, {0, 9, 40, 53}, cfg, false);  // off the chunk grid
    cfg.prune_rho = 0.2;  // pruning's threshold joined with the support's
    support_over_slices<Pruned>(++seed, {0, 32, 67}, cfg, true);
  }
}
