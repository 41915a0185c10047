#pragma once
// The arithmetic flavour of a reduction order (math/ops.hpp): batch_invariant runs on grpokit's own
// exp/log and non-contractible operations, the other orders on the platform's.
#include <type_traits>

#include "../math/ops.hpp"
#include "../reduction.hpp"

namespace grpokit::detail {

template <reduction_order O>
using ops_for = std::conditional_t<O == reduction_order::batch_invariant, math::invariant_ops, math::platform_ops>;

}  // namespace grpokit::detail
