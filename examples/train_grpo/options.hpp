#pragma once
// Command line of train_grpo.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include <grpokit/config.hpp>

namespace train_grpo {

struct options {
  std::string baseline = "mean";
  std::string mask = "padding";
  std::string is = "none";
  std::string adv_scale = "group";
  std::string device = "cpu";
  std::string csv;
  int group_size = 8;
  int prompts = 64;
  int off_policy_steps = 0;
  double mismatch = -1;  // < 0: the default of mismatch_sigma()
  double mismatch_rate = 1;
  int steps = 400;
  std::uint64_t seed = 1;
  double lr = 1e-2;
  double entropy_coef = 0.05;  // without it the policy collapses onto a partial answer (docs/train_grpo.md)
  int hidden = 128;
  double trm_max = std::log(2.0);  // |log ratio| bound of trust_region: ratios in [1/2, 2], as is_max
  int log_every = 10;
  double check = -1;  // >= 0: exit 1 unless the expected reward gained at least this much

  // Stale rollouts come from an "inference engine" that differs from the trainer; on-policy runs
  // sample exactly unless --mismatch says otherwise.
  double mismatch_sigma() const { return mismatch >= 0 ? mismatch : off_policy_steps > 0 ? 0.5 : 0.0; }

  grpokit::adv_scale advantage_scale() const {
    if (adv_scale == "batch") return grpokit::adv_scale::batch;
    if (adv_scale == "none") return grpokit::adv_scale::none;
    return grpokit::adv_scale::group;
  }

  grpokit::is_correction is_correction() const {
    if (is == "token_truncate") return grpokit::is_correction::token_truncate;
    if (is == "sequence_truncate") return grpokit::is_correction::sequence_truncate;
    if (is == "token_mask") return grpokit::is_correction::token_mask;
    if (is == "sequence_mask") return grpokit::is_correction::sequence_mask;
    return grpokit::is_correction::none;
  }
};

inline const char* usage =
    "usage: train_grpo [options]\n"
    "  --baseline B          mean|median|leave_one_out|ess_scaled (default mean); median samples\n"
    "                        group-size + 1 rollouts and drops the pivot (MC-GRPO)\n"
    "  --mask M              padding|trust_region|importance (default padding)\n"
    "  --is C                none|token_truncate|sequence_truncate|token_mask|sequence_mask:\n"
    "                        importance-sampling correction against the rollout engine (default none)\n"
    "  --adv-scale S         group|batch|none: divide the centred rewards by the group's spread (std,\n"
    "                        MAD for median), the batch std, or nothing (default group)\n"
    "  --group-size G        rollouts per prompt (default 8)\n"
    "  --prompts N           prompts per step (default 64)\n"
    "  --off-policy-steps K  extra updates on each batch of stale rollouts (default 0)\n"
    "  --mismatch S          std of the engine's logit noise (default 0.5 with K > 0, else 0)\n"
    "  --mismatch-rate Q     fraction of the tokens that get it (default 1)\n"
    "  --trm-max X           trust_region: drop a sequence with max |log ratio| > X (default ln 2)\n"
    "  --steps N             rollout batches (default 400)\n"
    "  --seed S              (default 1)\n"
    "  --lr LR               Adam learning rate (default 0.01)\n"
    "  --entropy-coef C      entropy bonus (default 0.05)\n"
    "  --hidden H            hidden units (default 128)\n"
    "  --csv PATH            per-step log\n"
    "  --log-every N         progress line every N steps, 0 = summary only (default 10)\n"
    "  --check MIN_GAIN      exit 1 unless the expected reward rose by at least MIN_GAIN\n"
    "  --device cpu|cuda     where the loss runs (default cpu; cuda is not built, see docs/train_grpo.md)\n";

inline options parse(int argc, char** argv) {
  options o;
  auto one_of = [](const std::string& v, std::vector<std::string> allowed, const char* flag) {
    for (const auto& a : allowed)
      if (v == a) return v;
    throw std::invalid_argument(std::string(flag) + ": unknown value '" + v + "'");
  };
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(usage, stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) throw std::invalid_argument(flag + ": missing value");
    const std::string v = argv[++i];
    auto integer = [&](long long min) {
      const long long x = std::stoll(v);
      if (x < min || x > 1000000) throw std::invalid_argument(flag + " must be in [" + std::to_string(min) + ", 1e6]");
      return static_cast<int>(x);
    };
    auto non_negative = [&] {
      const double x = std::stod(v);
      if (!(x >= 0)) throw std::invalid_argument(flag + " must be >= 0");
      return x;
    };
    if (flag == "--baseline") o.baseline = one_of(v, {"mean", "median", "leave_one_out", "ess_scaled"}, "--baseline");
    else if (flag == "--mask") o.mask = one_of(v, {"padding", "trust_region", "importance"}, "--mask");
    else if (flag == "--is")
      o.is = one_of(v, {"none", "token_truncate", "sequence_truncate", "token_mask", "sequence_mask"}, "--is");
    else if (flag == "--adv-scale") o.adv_scale = one_of(v, {"group", "batch", "none"}, "--adv-scale");
    else if (flag == "--device") o.device = one_of(v, {"cpu", "cuda"}, "--device");
    else if (flag == "--csv") o.csv = v;
    else if (flag == "--group-size") o.group_size = integer(1);
    else if (flag == "--prompts") o.prompts = integer(1);
    else if (flag == "--off-policy-steps") o.off_policy_steps = integer(0);
    else if (flag == "--mismatch") o.mismatch = non_negative();
    else if (flag == "--mismatch-rate") o.mismatch_rate = std::min(non_negative(), 1.0);
    else if (flag == "--trm-max") o.trm_max = non_negative();
    else if (flag == "--steps") o.steps = integer(1);
    else if (flag == "--seed") o.seed = std::stoull(v);
    else if (flag == "--lr") o.lr = std::stod(v);
    else if (flag == "--entropy-coef") o.entropy_coef = non_negative();
    else if (flag == "--hidden") o.hidden = integer(1);
    else if (flag == "--log-every") o.log_every = integer(0);
    else if (flag == "--check") o.check = non_negative();
    else throw std::invalid_argument("unknown option " + flag);
  }
  if (!(o.lr > 0)) throw std::invalid_argument("--lr must be > 0");
  return o;
}

}  // namespace train_grpo
