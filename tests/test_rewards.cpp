// GRPO-lambda's reward pre-pass against a direct long-double reference: ratios, the top fraction
// of groups, Kimi k1.5's length reward, ties, equal lengths, singletons, and bad input.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include <grpokit/host/grpo_lambda.hpp>

#include "catch.hpp"
#include "support.hpp"

namespace {

using ld = long double;

// The paper's recipe written out plainly: rank groups by correctness ratio (stable: lower index
// first on ties), the first ceil(lambda G) get r = correct + w * bonus, the rest r = correct.
std::vector<ld> reference(const std::vector<std::uint8_t>& correct, const std::vector<std::int64_t>& seq_off,
                          const std::vector<std::int64_t>& groups, ld lambda, ld weight, std::int64_t top) {
  const std::size_t G = groups.size() - 1;
  std::vector<ld> ratio(G);
  for (std::size_t g = 0; g < G; ++g) {
    ld c = 0;
    for (auto i = groups[g]; i < groups[g + 1]; ++i) c += correct[static_cast<std::size_t>(i)];
    ratio[g] = c / static_cast<ld>(groups[g + 1] - groups[g]);
  }
  std::vector<std::size_t> order(G);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return ratio[a] > ratio[b]; });
  std::vector<ld> r(correct.size());
  for (std::size_t k = 0; k < G; ++k) {
    const std::size_t g = order[k];
    std::vector<ld> len;
    for (auto i = groups[g]; i < groups[g + 1]; ++i) len.push_back(static_cast<ld>(seq_off[i + 1] - seq_off[i]));
    const ld lo = *std::min_element(len.begin(), len.end()), hi = *std::max_element(len.begin(), len.end());
    for (auto i = groups[g]; i < groups[g + 1]; ++i) {
      const ld c = correct[static_cast<std::size_t>(i)];
      ld bonus = 0;
      if (static_cast<std::int64_t>(k) < top && hi > lo) {
        const ld lam = 0.5L - (len[static_cast<std::size_t>(i - groups[g])] - lo) / (hi - lo);
        bonus = c == 1 ? lam : std::min<ld>(0, lam);
      }
      r[static_cast<std::size_t>(i)] = c + weight * bonus;
    }
  }
  (void)lambda;
  return r;
}

}  // namespace

TEST_CASE("grpo_lambda_rewards matches the reference", "[rewards]") {
  std::mt19937_64 rng(12);
  for (int rep = 0; rep < 200; ++rep) {
    const int G = 1 + rep % 13;
    const auto [groups, seq_off, correct] = support::random_grpo_lambda_batch(rng, G, 9, 30);
    grpokit::grpo_lambda_config cfg;
    cfg.top_fraction = (rep % 11) / 10.0;
    cfg.length_weight = rep % 3 == 0 ? 1.0 : 0.4;
    std::vector<double> r(correct.size());
    const auto st = grpokit::host::grpo_lambda_rewards<double>(correct, seq_off, groups, cfg, r);
    const std::int64_t top = static_cast<std::int64_t>(std::llround(std::ceil(cfg.top_fraction * G - 1e-9)));
    CHECK(st.penalised_groups == top);
    CHECK(st.groups == G);
    const auto want = reference(correct, seq_off, groups, cfg.top_fraction, cfg.length_weight, top);
    for (std::size_t i = 0; i < r.size(); ++i) {
      INFO("rep " << rep << " rollout " << i);
      CHECK(std::fabs(r[i] - static_cast<double>(want[i])) <= 1e-12);
    }
  }
}

TEST_CASE("grpo_lambda_rewards: worked example, ties, fractions and errors", "[rewards]") {
  // group 0: 2 of 3 correct, lengths 10, 20, 30; group 1: 1 of 1; group 2: 2 of 3 (tie with group 0)
  const std::vector<std::uint8_t> correct{1, 0, 1, 1, 1, 1, 0};
  const std::vector<std::int64_t> seq_off{0, 10, 30, 60, 65, 70, 80, 90}, groups{0, 3, 4, 7};
  std::vector<double> r(7);
  grpokit::grpo_lambda_config cfg;
  cfg.top_fraction = 0.5;  // ceil(1.5) = 2 groups: group 1 (ratio 1), then group 0 (2/3, lower index than 2)
  const auto st = grpokit::host::grpo_lambda_rewards<double>(correct, seq_off, groups, cfg, r);
  CHECK(st.penalised_groups == 2);
  CHECK(st.lowest_penalised_ratio == Approx(2.0 / 3));
  // group 0 lengths 10, 20, 30: lambda = 0.5, 0, -0.5; correct, wrong, correct
  CHECK(r[0] == Approx(1.5));
  CHECK(r[1] == 0.0);  // wrong: min(0, 0)
  CHECK(r[2] == Approx(0.5));
  CHECK(r[3] == 1.0);  // a singleton: all lengths equal, no bonus
  CHECK(r[4] == 1.0);  // group 2 is not penalised: plain 0/1
  CHECK(r[5] == 1.0);
  CHECK(r[6] == 0.0);
  cfg.top_fraction = 0.3;  // 0.3 * 10 groups is 3, not 4
  CHECK(grpokit::detail::top_count(0.3, 10) == 3);
  CHECK(grpokit::detail::top_count(0.31, 10) == 4);
  CHECK(grpokit::detail::top_count(0.0, 10) == 0);
  CHECK(grpokit::detail::top_count(1.0, 7) == 7);
  cfg.top_fraction = 1.5;
  REQUIRE_ERROR(grpokit::host::grpo_lambda_rewards<double>(correct, seq_off, groups, cfg, r),
                "top_fraction must be in [0, 1]");
  cfg.top_fraction = 0.5;
  std::vector<std::uint8_t> bad = correct;
  bad[2] = 2;
  REQUIRE_ERROR(grpokit::host::grpo_lambda_rewards<double>(bad, seq_off, groups, cfg, r), "correct[2] must be 0 or 1");
  const std::vector<std::int64_t> short_off{0, 10, 30};
  REQUIRE_ERROR(grpokit::host::grpo_lambda_rewards<double>(correct, short_off, groups, cfg, r),
                "seq_offsets: expected 8 offsets");
  const std::vector<std::int64_t> bad_groups{0, 3, 3, 7};
  REQUIRE_ERROR(grpokit::host::grpo_lambda_rewards<double>(correct, seq_off, bad_groups, cfg, r),
                "group_offsets: segment 1 is empty");
}
