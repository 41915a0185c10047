// Bad input gives a clear grpokit::error naming the argument; nothing is read out of bounds.
#include <limits>

#include "catch.hpp"
#include "support.hpp"

namespace {
using P = grpokit::policy<grpokit::precision<float, float>, grpokit::chunk<16>>;

struct fixture {
  std::int64_t T = 4, V = 5;
  std::vector<float> logits = std::vector<float>(20, 0.5f);
  std::vector<std::int64_t> targets{0, 1, 2, 4};
  std::vector<float> logp = std::vector<float>(4), ent = std::vector<float>(4), lse = std::vector<float>(4);
  std::vector<float> dlogits = std::vector<float>(20);
  std::vector<std::int64_t> seq_offsets{0, 1, 4};
  std::vector<float> adv{1, -1};
  grpokit::logits_input<float, float> input() { return {{logits.data(), T, V, V}, targets, {}}; }
  grpokit::rollout_batch<float> batch() {
    grpokit::rollout_batch<float> b;
    b.seq_offsets = seq_offsets;
    b.adv = adv;
    return b;
  }
  void forward(const grpokit::loss_config& c = {}) { grpokit::host::token_logprobs<P>(input(), c, {logp, ent, lse}); }
  grpokit::loss_result fused(const grpokit::loss_config& c = {}) {
    return grpokit::host::fused_loss<P>(input(), batch(), c, {dlogits.data(), T, V, V});
  }
};
}  // namespace

TEST_CASE("token ids out of range", "[errors]") {
  fixture f;
  f.targets[2] = 5;
  REQUIRE_ERROR(f.forward(), "targets[2] = 5 is out of range [0, 5)");
  f.targets[2] = -1;
  REQUIRE_ERROR(f.fused(), "targets[2] = -1");
}

TEST_CASE("size mismatches name the argument", "[errors]") {
  fixture f;
  f.targets.pop_back();
  REQUIRE_ERROR(f.forward(), "targets: expected 4 elements, got 3");
  fixture g;
  g.adv.push_back(0);
  REQUIRE_ERROR(g.fused(), "adv: expected 2 elements, got 3");
  fixture h;
  std::vector<float> temp(3, 1.f);
  REQUIRE_ERROR((grpokit::host::token_logprobs<P>({{h.logits.data(), 4, 5, 5}, h.targets, temp}, {}, {h.logp, h.ent, h.lse})),
                "temperature: expected 4 elements");
  REQUIRE_ERROR((grpokit::host::token_logprobs<P>({{h.logits.data(), 4, 5, 4}, h.targets, {}}, {}, {h.logp, h.ent, h.lse})),
                "row_stride 4 < cols 5");
}

TEST_CASE("decreasing or incomplete offsets", "[errors]") {
  fixture f;
  f.seq_offsets = {0, 3, 1, 4};
  f.adv = {1, 1, 1};
  REQUIRE_ERROR(f.fused(), "seq_offsets must be non-decreasing");
  fixture g;
  g.seq_offsets = {0, 1, 3};
  REQUIRE_ERROR(g.fused(), "seq_offsets: last offset must be 4");
  std::vector<float> r{1, 2}, adv(2);
  std::vector<std::uint8_t> keep(2);
  std::vector<std::int64_t> empty_group{0, 0, 2};
  REQUIRE_ERROR((grpokit::host::compute_advantages<P>({r, empty_group, {}, {}}, {}, {adv, keep})),
                "group_offsets: segment 0 is empty");
}

TEST_CASE("non-finite inputs are rejected when checking is on", "[errors]") {
  fixture f;
  f.logits[7] = std::numeric_limits<float>::quiet_NaN();
  REQUIRE_ERROR(f.forward(), "logits row 1 contains NaN or Inf");
  f.logits[7] = std::numeric_limits<float>::infinity();
  REQUIRE_ERROR(f.fused(), "logits row 1 contains NaN or Inf");
  grpokit::loss_config off;
  off.check_finite = false;
  REQUIRE_NOTHROW(f.forward(off));  // documented: garbage in, garbage out, no exception

  fixture g;
  std::vector<float> old(4, -1.f);
  old[3] = std::numeric_limits<float>::infinity();
  auto b = g.batch();
  b.logp_old = old;
  std::vector<float> dlogp(4);
  REQUIRE_ERROR((grpokit::host::policy_loss<P>({g.logp, {}}, b, {}, {dlogp, {}})), "logp_old[3] is not finite");
  std::vector<float> r{1, std::numeric_limits<float>::quiet_NaN()}, adv(2);
  std::vector<std::uint8_t> keep(2);
  std::vector<std::int64_t> groups{0, 2};
  REQUIRE_ERROR((grpokit::host::compute_advantages<P>({r, groups, {}, {}}, {}, {adv, keep})), "rewards[1] is not finite");
}

TEST_CASE("missing inputs a configuration needs", "[errors]") {
  fixture f;
  grpokit::loss_config c;
  c.kl = grpokit::kl_estimator::k3;
  REQUIRE_ERROR(f.fused(c), "kl != none needs logp_ref");
  c = {};
  c.is = grpokit::is_correction::token_truncate;
  REQUIRE_ERROR(f.fused(c), "needs logp_rollout");
  c = {};
  c.agg = grpokit::aggregation::seq_mean_token_sum_norm;
  REQUIRE_ERROR(f.fused(c), "needs norm_constant >= 1");
  c = {};
  c.temperature = 0;
  REQUIRE_ERROR(f.fused(c), "temperature must be > 0");
  std::vector<float> r{1, 2}, adv(2);
  std::vector<std::uint8_t> keep(2);
  std::vector<std::int64_t> groups{0, 2};
  REQUIRE_ERROR((grpokit::host::compute_advantages<grpokit::policy<grpokit::baseline::ess_scaled>>({r, groups, {}, {}}, {},
                                                                                                    {adv, keep})),
                "seq_log_ratio: the ess_scaled baseline needs 2");
}

TEST_CASE("dlogits may alias the logits only when asked", "[errors]") {
  fixture f;
  f.forward();
  std::vector<float> dlogp(4, 0.5f);
  const grpokit::backward_inputs<float> g{f.lse, f.ent, dlogp, {}};
  REQUIRE_ERROR((grpokit::host::logits_backward<P>(f.input(), g, {}, {f.logits.data() + 5, 4, 5, 5})),
                "dlogits overlaps the logits");
  std::vector<float> separate(20);
  grpokit::host::logits_backward<P>(f.input(), g, {}, {separate.data(), 4, 5, 5});
  grpokit::host::logits_backward<P>(f.input(), g, {}, {f.logits.data(), 4, 5, 5}, grpokit::backward_mode::in_place);
  CHECK(f.logits == separate);
}

TEST_CASE("empty sequences and sequences fully masked contribute nothing", "[errors]") {
  fixture f;
  f.seq_offsets = {0, 0, 4, 4};
  f.adv = {5, 1, -5};
  const auto r = f.fused();
  CHECK(std::isfinite(r.loss));
  CHECK(r.metrics.seqs == 1);
  for (float g : f.dlogits) CHECK(std::isfinite(g));
}
