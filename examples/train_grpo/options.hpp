#pragma once
// Command line of train_grpo.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include <grpokit/config.hpp>

namespace train_grpo {

// The baseline and the mask are compile-time policy axes: train_grpo.cpp maps these onto types.
enum class baseline_kind { mean, median, leave_one_out, ess_scaled };
enum class mask_kind { padding, trust_region, importance };
enum class device_kind { cpu, cuda };

// The values a flag accepts, by name: one table per flag, used to parse and to print.
template <class T>
struct choice {
  const char* name;
  T value;
};
inline constexpr choice<baseline_kind> baselines[] = {{"mean", baseline_kind::mean},
                                                      {"median", baseline_kind::median},
                                                      {"leave_one_out", baseline_kind::leave_one_out},
                                                      {"ess_scaled", baseline_kind::ess_scaled}};
inline constexpr choice<mask_kind> masks[] = {
    {"padding", mask_kind::padding}, {"trust_region", mask_kind::trust_region}, {"importance", mask_kind::importance}};
inline constexpr choice<grpokit::is_correction> corrections[] = {
    {"none", grpokit::is_correction::none},
    {"token_truncate", grpokit::is_correction::token_truncate},
    {"sequence_truncate", grpokit::is_correction::sequence_truncate},
    {"token_mask", grpokit::is_correction::token_mask},
    {"sequence_mask", grpokit::is_correction::sequence_mask}};
inline constexpr choice<grpokit::adv_scale> scales[] = {
    {"group", grpokit::adv_scale::group}, {"batch", grpokit::adv_scale::batch}, {"none", grpokit::adv_scale::none}};
inline constexpr choice<device_kind> devices[] = {{"cpu", device_kind::cpu}, {"cuda", device_kind::cuda}};
inline constexpr choice<bool> switches[] = {{"off", false}, {"on", true}};

template <class T, std::size_t N>
T value_of(const choice<T> (&table)[N], const std::string& name, const std::string& flag) {
  for (const choice<T>& c : table)
    if (name == c.name) return c.value;
  throw std::invalid_argument(flag + ": unknown value '" + name + "'");
}

template <class T, std::size_t N>
const char* name_of(const choice<T> (&table)[N], T value) {
  for (const choice<T>& c : table)
    if (value == c.value) return c.name;
  return "?";
}

struct options {
  baseline_kind baseline = baseline_kind::mean;
  mask_kind mask = mask_kind::padding;
  grpokit::is_correction is = grpokit::is_correction::none;
  grpokit::adv_scale adv_scale = grpokit::adv_scale::group;
  device_kind device = device_kind::cpu;
  bool data_parallel = false;  // --parallel mpi
  std::string csv, params_out;
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
  bool noise = false;  // --noise on: the LM head's gradient noise at every update (lm_head_norms)

  // Stale rollouts come from an "inference engine" that differs from the trainer; on-policy runs
  // sample exactly unless --mismatch says otherwise.
  double mismatch_sigma() const { return mismatch >= 0 ? mismatch : off_policy_steps > 0 ? 0.5 : 0.0; }
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
    "  --params-out PATH     the final parameters (raw float32)\n"
    "  --parallel none|mpi   mpi: data parallel over the ranks of mpirun (a build with MPI), batch_invariant,\n"
    "                        bitwise the same run for any number of ranks (default none)\n"
    "  --log-every N         a progress line (bar, step, reward, KL, clip, entropy) every N steps,\n"
    "                        0 = summary only (default 10)\n"
    "  --check MIN_GAIN      exit 1 unless the expected reward rose by at least MIN_GAIN\n"
    "  --noise on|off        measure the LM head's gradient noise (|G|^2, tr Sigma_inter, tr Sigma_intra) at\n"
    "                        every update with fused_linear_loss's lm_head_norms, into the CSV (default off)\n"
    "  --device cpu|cuda     where grpokit's loss side runs (default cpu; cuda needs a build with nvcc and a GPU,\n"
    "                        exit 77 without a GPU)\n";

inline options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(usage, stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) throw std::invalid_argument(flag + ": missing value");
    const std::string v = argv[++i];
    auto number = [&] {
      char* end = nullptr;
      const double x = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end != '\0') throw std::invalid_argument(flag + ": not a number: '" + v + "'");
      return x;
    };
    auto integer = [&](int min) {
      const double x = number();
      if (x != std::floor(x) || x < min || x > 1e6)
        throw std::invalid_argument(flag + " must be an integer in [" + std::to_string(min) + ", 1e6]");
      return static_cast<int>(x);
    };
    auto non_negative = [&] {
      const double x = number();
      if (!(x >= 0)) throw std::invalid_argument(flag + " must be >= 0");
      return x;
    };
    auto seed = [&] {
      char* end = nullptr;
      const unsigned long long x = std::strtoull(v.c_str(), &end, 10);
      if (end == v.c_str() || *end != '\0' || v[0] == '-')
        throw std::invalid_argument(flag + ": not a seed: '" + v + "'");
      return static_cast<std::uint64_t>(x);
    };
    auto parallel = [&] {
      if (v != "none" && v != "mpi") throw std::invalid_argument(flag + ": expected none or mpi, got '" + v + "'");
#if !defined(TRAIN_GRPO_WITH_MPI)
      if (v == "mpi") throw std::invalid_argument("--parallel mpi: this train_grpo was built without MPI");
#endif
      return v == "mpi";
    };
    auto device = [&] {
      const device_kind d = value_of(devices, v, flag);
#if !defined(TRAIN_GRPO_WITH_CUDA)
      if (d == device_kind::cuda)
        throw std::invalid_argument("--device cuda: this train_grpo was built without CUDA (CMake found no nvcc)");
#endif
      return d;
    };
    if (flag == "--baseline") o.baseline = value_of(baselines, v, flag);
    else if (flag == "--mask") o.mask = value_of(masks, v, flag);
    else if (flag == "--is") o.is = value_of(corrections, v, flag);
    else if (flag == "--adv-scale") o.adv_scale = value_of(scales, v, flag);
    else if (flag == "--device") o.device = device();
    else if (flag == "--csv") o.csv = v;
    else if (flag == "--params-out") o.params_out = v;
    else if (flag == "--parallel") o.data_parallel = parallel();
    else if (flag == "--group-size") o.group_size = integer(1);
    else if (flag == "--prompts") o.prompts = integer(1);
    else if (flag == "--off-policy-steps") o.off_policy_steps = integer(0);
    else if (flag == "--mismatch") o.mismatch = non_negative();
    else if (flag == "--mismatch-rate") o.mismatch_rate = std::min(non_negative(), 1.0);
    else if (flag == "--trm-max") o.trm_max = non_negative();
    else if (flag == "--steps") o.steps = integer(1);
    else if (flag == "--seed") o.seed = seed();
    else if (flag == "--lr") o.lr = number();
    else if (flag == "--entropy-coef") o.entropy_coef = non_negative();
    else if (flag == "--hidden") o.hidden = integer(1);
    else if (flag == "--log-every") o.log_every = integer(0);
    else if (flag == "--check") o.check = non_negative();
    else if (flag == "--noise") o.noise = value_of(switches, v, flag);
    else throw std::invalid_argument("unknown option " + flag);
  }
  if (!(o.lr > 0)) throw std::invalid_argument("--lr must be > 0");
  if (o.noise && (o.prompts < 2 || o.group_size < 2))
    throw std::invalid_argument("--noise on needs --prompts >= 2 and --group-size >= 2 (the inter- and intra-prompt noise)");
  if (o.noise && (o.data_parallel || o.device == device_kind::cuda))
    throw std::invalid_argument("--noise on measures with the host's fused_linear_loss in one process");
  if (o.data_parallel && o.device == device_kind::cuda)
    throw std::invalid_argument("--parallel mpi runs the loss on the host: drop --device cuda");
  return o;
}

}  // namespace train_grpo
