#pragma once
// loss_config and advantage_config as ordered lists of numbers, so that an operator schema can take
// them as one `float[]` and Python can offer every field as a keyword argument with the C++ name and
// default (the defaults are read from loss_config{}: one definition). An enum field is its index
// in `choices`, a bool 0 or 1.
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include <grpokit/config.hpp>
#include <grpokit/error.hpp>

namespace grpokit_torch {

template <class Config>
struct config_field {
  std::string name;
  std::vector<std::string> choices;  // an enum's names in declaration order; empty: a number
  bool is_bool = false;
  std::function<double(const Config&)> get;
  std::function<void(Config&, double)> set;
};

template <class Config>
config_field<Config> number(const char* name, double Config::*member) {
  return {name, {}, false, [member](const Config& c) { return c.*member; },
          [member](Config& c, double v) { c.*member = v; }};
}
// An integer field (a seed): exact in the double that carries it up to 2^53.
template <class Config>
config_field<Config> integer(const char* name, std::uint64_t Config::*member) {
  return {name, {}, false, [member](const Config& c) { return static_cast<double>(c.*member); },
          [member, name = std::string(name)](Config& c, double v) {
            GRPOKIT_REQUIRE(v >= 0 && v <= 9007199254740992.0 && v == static_cast<double>(static_cast<std::uint64_t>(v)),
                            name, ": must be an integer in [0, 2^53], got ", v);
            c.*member = static_cast<std::uint64_t>(v);
          }};
}
// A signed integer field (top_k): a negative one reaches the library's own check.
template <class Config>
config_field<Config> integer(const char* name, std::int64_t Config::*member) {
  return {name, {}, false, [member](const Config& c) { return static_cast<double>(c.*member); },
          [member, name = std::string(name)](Config& c, double v) {
            GRPOKIT_REQUIRE(std::fabs(v) <= 9007199254740992.0 && v == static_cast<double>(static_cast<std::int64_t>(v)),
                            name, ": must be an integer in [-2^53, 2^53], got ", v);
            c.*member = static_cast<std::int64_t>(v);
          }};
}
template <class Config>
config_field<Config> flag(const char* name, bool Config::*member) {
  return {name, {}, true, [member](const Config& c) { return c.*member ? 1.0 : 0.0; },
          [member](Config& c, double v) { c.*member = v != 0; }};
}
template <class Config, class Enum>
config_field<Config> choice(const char* name, Enum Config::*member, std::vector<std::string> names) {
  const double count = static_cast<double>(names.size());
  return {name, std::move(names), false, [member](const Config& c) { return static_cast<double>(c.*member); },
          [member, name = std::string(name), count](Config& c, double v) {
            GRPOKIT_REQUIRE(v >= 0 && v < count && v == static_cast<double>(static_cast<int>(v)), name,
                            ": not one of its choices (index ", v, ")");
            c.*member = static_cast<Enum>(static_cast<int>(v));
          }};
}

// `is` is a Python keyword: the field is offered as `is_correction`.
inline const std::vector<config_field<grpokit::loss_config>>& loss_fields() {
  using C = grpokit::loss_config;
  static const std::vector<config_field<C>> fields = {
      choice("obj", &C::obj, {"ppo_clip", "cispo", "gspo", "sapo", "reinforce", "gmpo", "kl_cov", "clip_cov"}),
      number("eps_low", &C::eps_low),
      number("eps_high", &C::eps_high),
      number("dual_clip", &C::dual_clip),
      number("delta", &C::delta),
      number("log_ratio_clamp", &C::log_ratio_clamp),
      number("gspo_log_ratio_max", &C::gspo_log_ratio_max),
      number("tau_pos", &C::tau_pos),
      number("tau_neg", &C::tau_neg),
      choice("is_correction", &C::is,
             {"none", "token_truncate", "sequence_truncate", "token_mask", "sequence_mask"}),
      number("is_min", &C::is_min),
      number("is_max", &C::is_max),
      number("is_log_ratio_clamp", &C::is_log_ratio_clamp),
      flag("is_batch_normalize", &C::is_batch_normalize),
      choice("kl", &C::kl, {"none", "k1", "k2", "k3"}),
      number("kl_coef", &C::kl_coef),
      number("kl_input_clamp", &C::kl_input_clamp),
      number("kl_output_clamp", &C::kl_output_clamp),
      flag("kl_straight_through", &C::kl_straight_through),
      flag("kl_is_weighted", &C::kl_is_weighted),
      number("entropy_coef", &C::entropy_coef),
      flag("entropy_token_mean", &C::entropy_token_mean),
      flag("cispo_clip_frac_any_sign", &C::cispo_clip_frac_any_sign),
      number("positive_nll_coef", &C::positive_nll_coef),
      number("top_entropy_quantile", &C::top_entropy_quantile),
      number("kl_cov_ratio", &C::kl_cov_ratio),
      number("ppo_kl_coef", &C::ppo_kl_coef),
      number("clip_cov_ratio", &C::clip_cov_ratio),
      number("clip_cov_lb", &C::clip_cov_lb),
      number("clip_cov_ub", &C::clip_cov_ub),
      integer("clip_cov_seed", &C::clip_cov_seed),
      number("temperature", &C::temperature),
      integer("top_k", &C::top_k),
      number("top_p", &C::top_p),
      choice("agg", &C::agg,
             {"token_mean", "token_sum", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm"}),
      number("global_tokens", &C::global_tokens),
      number("global_seqs", &C::global_seqs),
      number("norm_constant", &C::norm_constant),
      number("dp_size", &C::dp_size),
      number("trm_max_threshold", &C::trm_max_threshold),
      choice("trm_max_estimator", &C::trm_max_estimator, {"k1", "k2", "k3"}),
      number("trm_mean_threshold", &C::trm_mean_threshold),
      choice("trm_mean_estimator", &C::trm_mean_estimator, {"k1", "k2", "k3"}),
      number("prune_rho", &C::prune_rho),
      flag("importance_sequence", &C::importance_sequence),
      number("importance_lo", &C::importance_lo),
      number("importance_hi", &C::importance_hi),
      number("opsm_threshold", &C::opsm_threshold),
      number("m2po_threshold", &C::m2po_threshold),
      choice("dppo", &C::dppo, {"none", "tv", "binary_kl"}),
      number("dppo_low", &C::dppo_low),
      number("dppo_high", &C::dppo_high),
      flag("check_finite", &C::check_finite),
  };
  return fields;
}

inline const std::vector<config_field<grpokit::advantage_config>>& advantage_fields() {
  using C = grpokit::advantage_config;
  static const std::vector<config_field<C>> fields = {
      choice("scale", &C::scale, {"group", "batch", "none", "gpg", "whiten"}),
      number("eps", &C::eps),
      number("std_floor", &C::std_floor),
      number("mad_eps", &C::mad_eps),
      flag("mask_zero_variance", &C::mask_zero_variance),
      flag("fold_lr_factor", &C::fold_lr_factor),
      number("ess_ratio_ref", &C::ess_ratio_ref),
      flag("equal_group_weight", &C::equal_group_weight),
      number("clip_low", &C::clip_low),
      number("clip_high", &C::clip_high),
  };
  return fields;
}

template <class Config>
Config config_from(const std::vector<config_field<Config>>& fields, const std::vector<double>& values) {
  GRPOKIT_REQUIRE(values.size() == fields.size(), "grpokit_torch: ", values.size(), " config values, expected ",
                  fields.size(), " (use the Python wrappers)");
  Config c{};
  for (std::size_t i = 0; i < fields.size(); ++i) fields[i].set(c, values[i]);
  return c;
}

// (name, default, choices, is_bool) of every field, in order, the defaults from Config{}.
template <class Config>
std::vector<std::tuple<std::string, double, std::vector<std::string>, bool>> describe_fields(
    const std::vector<config_field<Config>>& fields) {
  std::vector<std::tuple<std::string, double, std::vector<std::string>, bool>> out;
  const Config defaults{};
  for (const auto& f : fields) out.emplace_back(f.name, f.get(defaults), f.choices, f.is_bool);
  return out;
}

}  // namespace grpokit_torch
