// Reduction order: batch_invariant rows are bitwise independent of the batch they sit in;
// deterministic results are bitwise identical run to run.
#include <random>
#include <tuple>

#include "catch.hpp"
#include "support.hpp"

namespace {

// Row results (logp, entropy, lse, dlogits) of row `r` of problem `p` computed inside a batch
// made of `before` random rows, the row, and `after` random rows.
template <class P>
struct row_bits {
  std::vector<typename P::accum_type> scalars;
  std::vector<typename P::storage_type> dlogits;
};

template <class P>
row_bits<P> row_in_batch(const std::vector<double>& row, std::int64_t target, double g_logp, double g_ent,
                         std::int64_t before, std::int64_t after, std::uint64_t seed) {
  using S = typename P::storage_type;
  using R = typename P::accum_type;
  const std::int64_t V = static_cast<std::int64_t>(row.size()), T = before + 1 + after;
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n(0, 3);
  std::vector<double> x;
  for (std::int64_t i = 0; i < before * V; ++i) x.push_back(n(rng));
  x.insert(x.end(), row.begin(), row.end());
  for (std::int64_t i = 0; i < after * V; ++i) x.push_back(n(rng));
  const auto logits = support::to_storage<S>(x);
  std::vector<std::int64_t> targets(static_cast<std::size_t>(T), 0);
  targets[static_cast<std::size_t>(before)] = target;
  std::vector<R> logp(T), ent(T), lse(T), dlogp(T, R(0.25)), dent(T, R(-0.5));
  dlogp[before] = static_cast<R>(g_logp);
  dent[before] = static_cast<R>(g_ent);
  const grpokit::logits_input<S, R> in{{logits.data(), T, V, V}, targets, {}};
  grpokit::loss_config cfg;
  cfg.prune_rho = 0.01;
  grpokit::host::token_logprobs<P>(in, cfg, {logp, ent, lse});
  std::vector<S> dx(logits.size());
  grpokit::host::logits_backward<P>(in, {lse, ent, dlogp, dent}, cfg, {dx.data(), T, V, V});
  row_bits<P> out;
  out.scalars = {logp[before], ent[before], lse[before]};
  out.dlogits.assign(dx.begin() + before * V, dx.begin() + (before + 1) * V);
  return out;
}

template <class P>
void check_invariance(std::int64_t V) {
  std::mt19937_64 rng(static_cast<std::uint64_t>(V));
  std::normal_distribution<double> n(0, 2);
  std::vector<double> row(static_cast<std::size_t>(V));
  for (auto& v : row) v = n(rng);
  row = support::to_double(support::to_storage<typename P::storage_type>(row));
  const auto first = row_in_batch<P>(row, V / 2, -0.7, 0.3, 0, 0, 1);
  for (auto shape : {std::pair<std::int64_t, std::int64_t>{1, 0}, {0, 5}, {7, 3}, {30, 1}}) {
    const auto other = row_in_batch<P>(row, V / 2, -0.7, 0.3, shape.first, shape.second, 99 + shape.first);
    INFO("V = " << V << " batch of " << shape.first + shape.second + 1 << " at position " << shape.first);
    CHECK(support::same_bits(first.scalars, other.scalars));
    CHECK(support::same_bits(first.dlogits, other.dlogits));
  }
}

}  // namespace

using bi = grpokit::reduction::batch_invariant;
using invariant_policies =
    std::tuple<grpokit::policy<bi, grpokit::precision<float, float>, grpokit::chunk<64>>,
               grpokit::policy<bi, grpokit::precision<double, double>>,
               grpokit::policy<bi, grpokit::precision<float, float>, grpokit::chunk<16>, grpokit::mask::vocab_prune>
#if defined(GRPOKIT_HAS_CUDA_HALF)
               ,
               grpokit::policy<bi, grpokit::precision<__nv_bfloat16, float>, grpokit::chunk<256>>
#endif
               >;

TEMPLATE_LIST_TEST_CASE("batch_invariant rows are bitwise independent of batch size and position", "[invariance]",
                        invariant_policies) {
  INFO(support::describe<TestType>());
  for (std::int64_t V : support::awkward_vocab_sizes<TestType>()) check_invariance<TestType>(V);
}

TEST_CASE("deterministic: repeated runs give identical bits", "[invariance]") {
  using P = grpokit::policy<grpokit::reduction::deterministic, grpokit::precision<float, float>, grpokit::chunk<256>>;
  std::mt19937_64 rng(4);
  ref::problem p = ref::make_problem(rng, {40, 3, 77, 1, 19}, 1000);
  std::vector<ref::ld> logp, ent;
  grpokit::loss_config c = grpokit::presets::grpo::config();
  c.entropy_coef = 0.01;
  support::ref_rows(p, std::vector<ref::ld>(p.logits.begin(), p.logits.end()), c, false, logp, ent);
  ref::add_policies(rng, p, logp, 0.2);
  const auto a = support::run_fused<P>(p, c);
  for (int rep = 0; rep < 3; ++rep) {
    const auto b = support::run_fused<P>(p, c);
    CHECK(support::same_bits(a.dlogits, b.dlogits));
    CHECK(support::same_bits(a.logp, b.logp));
    CHECK(std::memcmp(&a.result.loss, &b.result.loss, sizeof(double)) == 0);
  }
}

TEST_CASE("the batch-invariant dlogp of a sequence does not depend on its neighbours", "[invariance]") {
  // GSPO and sequence IS use per-sequence sums: they are reduced relative to the sequence start.
  using P = grpokit::policy<grpokit::reduction::batch_invariant, grpokit::precision<float, float>>;
  grpokit::loss_config c;
  c.obj = grpokit::objective::gspo;
  c.is = grpokit::is_correction::sequence_truncate;
  c.agg = grpokit::aggregation::token_sum;
  std::mt19937_64 rng(8);
  std::normal_distribution<float> n(-1, 0.5);
  std::vector<float> seq(45), old(45), roll(45);
  for (std::size_t i = 0; i < seq.size(); ++i) {
    seq[i] = std::min(n(rng), -0.01f);
    old[i] = seq[i] + 0.1f * n(rng);
    roll[i] = seq[i] + 0.1f * n(rng);
  }
  auto run = [&](std::int64_t before) {
    std::vector<float> logp(static_cast<std::size_t>(before), -1.f), lo(logp), lr(logp);
    logp.insert(logp.end(), seq.begin(), seq.end());
    lo.insert(lo.end(), old.begin(), old.end());
    lr.insert(lr.end(), roll.begin(), roll.end());
    std::vector<std::int64_t> off{0, before, before + 45};
    std::vector<float> adv{0.3f, -1.2f}, dlogp(logp.size());
    grpokit::rollout_batch<float> b;
    b.seq_offsets = off;
    b.adv = adv;
    b.logp_old = lo;
    b.logp_rollout = lr;
    grpokit::host::policy_loss<P>({logp, {}}, b, c, {dlogp, {}});
    return std::vector<float>(dlogp.begin() + before, dlogp.end());
  };
  const auto a = run(0), b = run(13), d = run(100);
  CHECK(support::same_bits(a, b));
  CHECK(support::same_bits(a, d));
}
