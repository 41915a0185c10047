#pragma once
// Masks: which tokens and sequences enter the loss. The padding mask (the caller's token_mask and
// the seq_mask of compute_advantages) always applies; a mask policy adds:
//   padding       nothing more
//   trust_region  TRM: drop a whole sequence whose sampled-token divergence to the rollout policy
//                 exceeds a threshold (max and/or mean criterion, estimators k1/k2/k3)
//   vocab_prune   dynamic vocabulary pruning: the softmax is renormalised over
//                 {v : p_v >= rho * max p}; a sampled token outside that set is masked
//   importance    IcePop / masked IS: drop the token (or sequence) whose rollout ratio leaves [lo, hi]
//   all_of<M...>  all of them
// A user-defined mask is a type with
//   using policy_axis = grpokit::axis::mask;
//   template <class Real> GRPOKIT_HD static bool keep(const grpokit::token_view<Real>&,
//                                                     const grpokit::loss_config&);
// and optionally `static constexpr unsigned features` (a combination of mask_feature bits).
#include <cstdint>
#include <type_traits>

#include "axis.hpp"
#include "config.hpp"
#include "detail/macros.hpp"

namespace grpokit {

enum mask_feature : unsigned {
  mask_trust_region = 1u,
  mask_vocab_prune = 2u,
  mask_importance = 4u,
};

// What a user-defined mask sees of one token. Absent inputs have has_* = false.
template <class Real>
struct token_view {
  Real logp, entropy, logp_old, logp_ref, logp_rollout, adv;  // adv: the token's (batch.token_adv), else its sequence's
  bool has_old, has_ref, has_rollout;
  std::int64_t token, seq;
};

namespace detail {
struct builtin_mask {
  using policy_axis = axis::mask;
  template <class Real>
  GRPOKIT_HD static bool keep(const token_view<Real>&, const loss_config&) {
    return true;
  }
};
}  // namespace detail

namespace mask {
struct padding : detail::builtin_mask {
  static constexpr unsigned features = 0;
};
struct trust_region : detail::builtin_mask {
  static constexpr unsigned features = mask_trust_region;
};
struct vocab_prune : detail::builtin_mask {
  static constexpr unsigned features = mask_vocab_prune;
};
struct importance : detail::builtin_mask {
  static constexpr unsigned features = mask_importance;
};
}  // namespace mask

namespace detail {
template <class M, class = void>
struct mask_features : std::integral_constant<unsigned, 0u> {};
template <class M>
struct mask_features<M, std::void_t<decltype(M::features)>> : std::integral_constant<unsigned, M::features> {};

template <class M, class = void>
struct has_keep : std::false_type {};
template <class M>
struct has_keep<M, std::void_t<decltype(static_cast<bool>(M::template keep<float>(
                       std::declval<const token_view<float>&>(), std::declval<const loss_config&>())))>>
    : std::true_type {};

template <class M>
constexpr bool check_mask() {
  static_assert(has_keep<M>::value,
                "grpokit mask: the type must declare `template <class Real> static bool "
                "keep(const grpokit::token_view<Real>&, const grpokit::loss_config&)` (see mask.hpp)");
  return true;
}
}  // namespace detail

namespace mask {
template <class... M>
struct all_of {
  static_assert(sizeof...(M) >= 1, "grpokit::mask::all_of needs at least one mask");
  static_assert((detail::is_on_axis<M, axis::mask>::value && ...),
                "grpokit::mask::all_of: every argument must be a mask (policy_axis = grpokit::axis::mask)");
  static_assert((detail::check_mask<M>() && ...), "");
  using policy_axis = axis::mask;
  static constexpr unsigned features = (detail::mask_features<M>::value | ...);
  template <class Real>
  GRPOKIT_HD static bool keep(const token_view<Real>& t, const loss_config& cfg) {
    return (M::template keep<Real>(t, cfg) && ...);
  }
};
}  // namespace mask

}  // namespace grpokit
