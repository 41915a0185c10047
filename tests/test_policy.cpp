// Policy composition: any order, defaults, presets; and a user-defined baseline and mask.
#include <type_traits>

#include "catch.hpp"
#include "support.hpp"

namespace {
using namespace grpokit;

using defaults = policy<>;
static_assert(std::is_same<defaults::storage_type, float>::value, "");
static_assert(std::is_same<defaults::accum_type, float>::value, "");
static_assert(defaults::order == reduction_order::deterministic, "");
static_assert(std::is_same<defaults::baseline_type, baseline::mean>::value, "");
static_assert(std::is_same<defaults::mask_type, mask::padding>::value, "");
static_assert(defaults::chunk_size == 4096 && defaults::chunk_lanes == 256, "");

using a = policy<chunk<64>, mask::trust_region, baseline::median, reduction::batch_invariant, precision<double, double>>;
using b = policy<precision<double, double>, reduction::batch_invariant, baseline::median, mask::trust_region, chunk<64>>;
static_assert(std::is_same<a::storage_type, b::storage_type>::value && a::order == b::order &&
                  std::is_same<a::baseline_type, b::baseline_type>::value && a::chunk_size == 64 && a::chunk_lanes == 32 && a::vector_width == 2 &&
                  a::trust_region && !a::vocab_prune && !a::importance_mask,
              "argument order does not matter");

using composed = policy<mask::all_of<mask::vocab_prune, mask::importance>>;
static_assert(composed::vocab_prune && composed::importance_mask && !composed::trust_region, "");

// A user-defined baseline: the best reward of the group (advantage <= 0), no scaling.
struct max_baseline {
  using policy_axis = axis::baseline;
  static double center(group_io& g, const advantage_config&) {
    double best = g.rewards[0];
    for (std::int64_t i = 1; i < g.n; ++i) best = std::max(best, g.rewards[i]);
    for (std::int64_t i = 0; i < g.n; ++i) g.centered[i] = g.rewards[i] - best;
    return 1.0;
  }
};
}  // namespace

TEST_CASE("a user-defined baseline plugs into compute_advantages", "[policy]") {
  using P = policy<max_baseline>;
  std::vector<float> r{1, 3, 2, 5, 5}, adv(5);
  std::vector<std::int64_t> off{0, 3, 5};
  std::vector<std::uint8_t> keep(5);
  advantage_config cfg;
  cfg.scale = adv_scale::none;
  host::compute_advantages<P>({r, off, {}, {}}, cfg, {adv, keep});
  CHECK(adv == std::vector<float>{-2, 0, -1, 0, 0});
  CHECK(keep == std::vector<std::uint8_t>{1, 1, 1, 1, 1});
}

TEST_CASE("presets carry the published defaults", "[policy][presets]") {
  const auto grpo = presets::grpo::config();
  CHECK(grpo.obj == objective::ppo_clip);
  CHECK(grpo.eps_low == 0.2);
  CHECK(grpo.dual_clip == 3.0);
  CHECK(grpo.kl == kl_estimator::k3);
  CHECK(grpo.adv.eps == 1e-6);
  const auto dr = presets::dr_grpo::config(4096);
  CHECK(dr.adv.scale == adv_scale::none);
  CHECK(dr.agg == aggregation::seq_mean_token_sum_norm);
  CHECK(dr.norm_constant == 4096);
  CHECK(presets::dapo::config().eps_high == 0.28);
  const auto mc = presets::mc_grpo::config();
  CHECK(mc.adv.mad_eps == 1e-3);
  CHECK(mc.kl_coef == 0.04);
  static_assert(std::is_same<presets::mc_grpo::policy<>::baseline_type, baseline::median>::value, "");
  const auto vcpo = presets::vcpo::config();
  CHECK(vcpo.is == is_correction::sequence_truncate);
  CHECK(vcpo.is_max == 8.0);
  static_assert(std::is_same<presets::vcpo::policy<>::baseline_type, baseline::ess_scaled>::value, "");
  CHECK(presets::gspo::config().eps_low == 3e-4);
  CHECK(presets::cispo::config().obj == objective::cispo);
  const auto gpg = presets::gpg::config();
  CHECK(gpg.obj == objective::reinforce);
  CHECK(gpg.adv.scale == adv_scale::gpg);
  CHECK(gpg.kl == kl_estimator::none);
  static_assert(std::is_same<presets::grpo_pass_at_k::policy<>::baseline_type, baseline::pass_at_k>::value, "");
  CHECK(presets::grpo_pass_at_k::config().kl == kl_estimator::k3);
  CHECK(presets::gmpo::config().obj == objective::gmpo);
  static_assert(std::is_same<presets::opo::policy<>::baseline_type, baseline::opo>::value, "");
  CHECK(presets::opo::config().adv.scale == adv_scale::none);
  CHECK(presets::reinforce_pp_baseline::config().adv.scale == adv_scale::whiten);
  CHECK(presets::gmpo::config().eps_low == 0.4);
  CHECK(presets::dppo_tv::config().dppo == dppo_divergence::tv);
  CHECK(presets::dppo_tv::config().obj == objective::cispo);
  static_assert(presets::grpo::policy<precision<double, double>, reduction::batch_invariant>::order ==
                    reduction_order::batch_invariant,
                "");
}
