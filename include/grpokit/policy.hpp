#pragma once
// policy<Args...>: one argument per axis, in any order, every axis defaulted:
//   precision<float, float>, reduction::deterministic, baseline::mean, mask::padding, chunk<4096>.
#include <cstdint>
#include <type_traits>

#include "axis.hpp"
#include "baseline.hpp"
#include "chunk.hpp"
#include "mask.hpp"
#include "precision.hpp"
#include "reduction.hpp"

namespace grpokit {

namespace detail {
// The argument of `Args` on `Axis`, or `Default`.
template <class Axis, class Default, class... Args>
struct pick_axis {
  static constexpr int count = (0 + ... + (is_on_axis<Args, Axis>::value ? 1 : 0));
  using type = Default;
};
template <class Axis, class Default, class First, class... Rest>
struct pick_axis<Axis, Default, First, Rest...> {
  static constexpr int count = (is_on_axis<First, Axis>::value ? 1 : 0) + pick_axis<Axis, Default, Rest...>::count;
  using type = std::conditional_t<is_on_axis<First, Axis>::value, First,
                                  typename pick_axis<Axis, Default, Rest...>::type>;
};

template <class T>
struct is_policy_tag : std::false_type {};
}  // namespace detail

template <class... Args>
struct policy {
  static_assert((detail::has_policy_axis<Args>::value && ...),
                "grpokit::policy: every argument must be a policy: precision<S, A>, reduction::*, "
                "baseline::*, mask::*, chunk<N>, or a user type declaring `using policy_axis = "
                "grpokit::axis::baseline` (or ::mask)");

 private:
  using precision_pick = detail::pick_axis<axis::precision, precision<>, Args...>;
  using reduction_pick = detail::pick_axis<axis::reduction, reduction::deterministic, Args...>;
  using baseline_pick = detail::pick_axis<axis::baseline, baseline::mean, Args...>;
  using mask_pick = detail::pick_axis<axis::mask, mask::padding, Args...>;
  using chunk_pick = detail::pick_axis<axis::chunk, chunk<4096>, Args...>;
  static_assert(precision_pick::count <= 1, "grpokit::policy: more than one precision<> argument");
  static_assert(reduction_pick::count <= 1, "grpokit::policy: more than one reduction:: argument");
  static_assert(baseline_pick::count <= 1, "grpokit::policy: more than one baseline:: argument");
  static_assert(mask_pick::count <= 1, "grpokit::policy: more than one mask:: argument (compose with mask::all_of<...>)");
  static_assert(chunk_pick::count <= 1, "grpokit::policy: more than one chunk<> argument");

 public:
  using precision_type = typename precision_pick::type;
  using reduction_type = typename reduction_pick::type;
  using baseline_type = typename baseline_pick::type;
  using mask_type = typename mask_pick::type;
  using chunk_type = typename chunk_pick::type;

  static_assert(detail::check_baseline<baseline_type>(), "");
  static_assert(detail::check_mask<mask_type>(), "");

  using storage_type = typename precision_type::storage_type;
  using accum_type = typename precision_type::accum_type;
  static constexpr reduction_order order = reduction_type::value;
  static constexpr std::int64_t chunk_size = chunk_type::value;
  // The in-tile reduction (math/online_lse.hpp): blocks of `vector_width` columns (16 bytes of
  // storage) are dealt round-robin to `chunk_lanes` lanes.
  static constexpr std::int64_t vector_width = 16 / static_cast<std::int64_t>(sizeof(storage_type));
  static constexpr std::int64_t chunk_lanes =
      chunk_size / vector_width < 1 ? 1 : (chunk_size / vector_width > 256 ? 256 : chunk_size / vector_width);
  static constexpr unsigned mask_features = detail::mask_features<mask_type>::value;
  static constexpr bool trust_region = (mask_features & mask_trust_region) != 0;
  static constexpr bool vocab_prune = (mask_features & mask_vocab_prune) != 0;
  static constexpr bool importance_mask = (mask_features & mask_importance) != 0;

  // The same policy with another storage type (fused_linear_loss keeps its logits chunk in Accum).
  template <class Storage>
  using with_storage = policy<grpokit::precision<Storage, accum_type>, reduction_type, baseline_type, mask_type,
                              chunk_type>;
  // ... and with another baseline (compute_advantages_multi whitens the sum with baseline::external).
  template <class Baseline>
  using with_baseline = policy<precision_type, reduction_type, Baseline, mask_type, chunk_type>;
};

namespace detail {
template <class... Args>
struct is_policy_tag<policy<Args...>> : std::true_type {};
}  // namespace detail

template <class P>
constexpr bool is_policy_v = detail::is_policy_tag<P>::value;

namespace detail {
// The types an entry point reads off its policy; a non-policy argument stops here with a message.
template <class P>
struct policy_types {
  static_assert(is_policy_tag<P>::value,
                "grpokit: the template argument must be grpokit::policy<...> (or a preset's ::policy<>)");
  using accum_type = float;
  using storage_type = float;
};
template <class... Args>
struct policy_types<policy<Args...>> {
  using accum_type = typename policy<Args...>::accum_type;
  using storage_type = typename policy<Args...>::storage_type;
};
}  // namespace detail

template <class P>
using accum_t = typename detail::policy_types<P>::accum_type;
template <class P>
using storage_t = typename detail::policy_types<P>::storage_type;


}  // namespace grpokit
