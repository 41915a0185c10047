// plan_groups (sGPO's difficulty-sized groups): a worked example, the budget, the seeded subset of
// unsolvable prompts, properties on random profiles, and bad input.
#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <vector>

#include <grpokit/host/group_plan.hpp>

#include "catch.hpp"

TEST_CASE("plan_groups: sizes 1/p clamped, trivial dropped, unsolvable sub-sampled, easy to hard", "[group_plan]") {
  const std::vector<double> p{1, 0.5, 0.25, 0.1, 0, 0, 0.02, 0.3};
  grpokit::group_plan_config cfg;
  cfg.min_group = 2;
  cfg.max_group = 16;
  cfg.unsolvable_fraction = 0.5;  // one of the two unsolvable prompts
  const auto plan = grpokit::host::plan_groups(p, cfg);
  REQUIRE(plan.prompt.size() == 6);
  CHECK(std::vector<std::int64_t>(plan.prompt.begin(), plan.prompt.begin() + 5) ==
        std::vector<std::int64_t>{1, 7, 2, 3, 6});
  CHECK((plan.prompt[5] == 4 || plan.prompt[5] == 5));
  // ceil(1/p): 2, ceil(3.33) = 4, 4, 10, 50 -> 16; unsolvable -> max_group
  CHECK(plan.group_size == std::vector<std::int64_t>{2, 4, 4, 10, 16, 16});
  CHECK(plan.group_offsets == std::vector<std::int64_t>{0, 2, 6, 10, 20, 36, 52});
  CHECK(plan.rollouts == 52);
  CHECK(plan.dropped_trivial == 1);
  CHECK(plan.dropped_unsolvable == 1);
  CHECK(plan.dropped_budget == 0);

  cfg.budget = 30;  // scaled by 30/52, floored, not below min_group: 2, 2, 2, 5, 9, 9
  const auto scaled = grpokit::host::plan_groups(p, cfg);
  CHECK(scaled.group_size == std::vector<std::int64_t>{2, 2, 2, 5, 9, 9});
  CHECK(scaled.rollouts == 29);
  cfg.budget = 8;  // every group at min_group is 12 > 8: the two hardest prompts go
  const auto tight = grpokit::host::plan_groups(p, cfg);
  CHECK(tight.group_size == std::vector<std::int64_t>{2, 2, 2, 2});
  CHECK(tight.prompt == std::vector<std::int64_t>{1, 7, 2, 3});
  CHECK(tight.dropped_budget == 2);
}

TEST_CASE("plan_groups: the unsolvable subset is exact in size and set by the seed", "[group_plan]") {
  std::vector<double> p(10, 0.0);
  grpokit::group_plan_config cfg;
  cfg.unsolvable_fraction = 0.3;
  std::set<std::vector<std::int64_t>> subsets;
  for (std::uint64_t seed = 0; seed < 20; ++seed) {
    cfg.seed = seed;
    const auto a = grpokit::host::plan_groups(p, cfg), b = grpokit::host::plan_groups(p, cfg);
    CHECK(a.prompt == b.prompt);  // deterministic
    CHECK(a.prompt.size() == 3);  // 0.3 * 10 is 3, not 4
    CHECK(a.dropped_unsolvable == 7);
    auto sorted = a.prompt;
    std::sort(sorted.begin(), sorted.end());
    subsets.insert(sorted);
  }
  CHECK(subsets.size() > 5);  // the seed chooses the subset
  cfg.unsolvable_fraction = 0;
  CHECK(grpokit::host::plan_groups(p, cfg).prompt.empty());
}

TEST_CASE("plan_groups: properties on random profiles", "[group_plan]") {
  std::mt19937_64 rng(3);
  for (int rep = 0; rep < 300; ++rep) {
    std::uniform_int_distribution<int> count(0, 40), kind(0, 5);
    std::uniform_real_distribution<double> u(0.001, 0.999);
    std::vector<double> p(static_cast<std::size_t>(count(rng)));
    for (auto& v : p) v = kind(rng) == 0 ? 0.0 : kind(rng) == 0 ? 1.0 : u(rng);
    grpokit::group_plan_config cfg;
    cfg.min_group = 1 + rep % 4;
    cfg.max_group = cfg.min_group + rep % 50;
    cfg.budget = rep % 3 == 0 ? 0 : rep % 200;
    cfg.unsolvable_fraction = (rep % 5) / 4.0;
    cfg.seed = static_cast<std::uint64_t>(rep);
    const auto plan = grpokit::host::plan_groups(p, cfg);
    INFO("rep " << rep);
    REQUIRE(plan.prompt.size() == plan.group_size.size());
    REQUIRE(plan.group_offsets.size() == plan.prompt.size() + 1);
    std::int64_t trivial = 0, sum = 0;
    for (double v : p) trivial += v == 1;
    CHECK(plan.dropped_trivial == trivial);
    CHECK(static_cast<std::int64_t>(plan.prompt.size()) + plan.dropped_trivial + plan.dropped_unsolvable +
              plan.dropped_budget ==
          static_cast<std::int64_t>(p.size()));
    for (std::size_t k = 0; k < plan.prompt.size(); ++k) {
      CHECK(plan.group_size[k] >= cfg.min_group);
      CHECK(plan.group_size[k] <= cfg.max_group);
      CHECK(p[static_cast<std::size_t>(plan.prompt[k])] < 1);
      if (k > 0) CHECK(p[static_cast<std::size_t>(plan.prompt[k - 1])] >= p[static_cast<std::size_t>(plan.prompt[k])]);
      sum += plan.group_size[k];
      CHECK(plan.group_offsets[k + 1] == sum);
    }
    CHECK(plan.rollouts == sum);
    if (cfg.budget > 0) CHECK(sum <= cfg.budget);
    if (cfg.budget == 0)  // without a budget every kept size is exactly clamp(ceil(1/p))
      for (std::size_t k = 0; k < plan.prompt.size(); ++k) {
        const double v = p[static_cast<std::size_t>(plan.prompt[k])];
        const std::int64_t want =
            v == 0 ? cfg.max_group
                   : std::min<std::int64_t>(
                         cfg.max_group,
                         std::max<std::int64_t>(cfg.min_group, static_cast<std::int64_t>(std::ceil(1 / v))));
        CHECK(plan.group_size[k] == want);
      }
  }
}

TEST_CASE("plan_groups: bad input", "[group_plan]") {
  const std::vector<double> p{0.5, 0.2};
  grpokit::group_plan_config cfg;
  cfg.min_group = 0;
  REQUIRE_ERROR(grpokit::host::plan_groups(p, cfg), "need 1 <= min_group (0)");
  cfg = {};
  cfg.max_group = 1;
  REQUIRE_ERROR(grpokit::host::plan_groups(p, cfg), "<= max_group (1)");
  cfg = {};
  cfg.unsolvable_fraction = 2;
  REQUIRE_ERROR(grpokit::host::plan_groups(p, cfg), "unsolvable_fraction must be in [0, 1]");
  cfg = {};
  cfg.budget = -1;
  REQUIRE_ERROR(grpokit::host::plan_groups(p, cfg), "budget must be >= 0");
  const std::vector<double> bad{0.5, std::nan("")};
  REQUIRE_ERROR(grpokit::host::plan_groups(bad, {}), "success_rate[1] must be in [0, 1]");
}
