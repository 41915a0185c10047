#pragma once
// The five axes of a grpokit policy. Every policy argument declares the axis it belongs to with
// `using policy_axis = grpokit::axis::<name>;` (the built-in ones do; user-defined baselines and
// masks must too).
#include <type_traits>

namespace grpokit::axis {
struct precision {};
struct reduction {};
struct baseline {};
struct mask {};
struct chunk {};
}  // namespace grpokit::axis

namespace grpokit::detail {
template <class T, class = void>
struct has_policy_axis : std::false_type {};
template <class T>
struct has_policy_axis<T, std::void_t<typename T::policy_axis>> : std::true_type {};

template <class T, class Axis, class = void>
struct is_on_axis : std::false_type {};
template <class T, class Axis>
struct is_on_axis<T, Axis, std::void_t<typename T::policy_axis>>
    : std::is_same<typename T::policy_axis, Axis> {};
}  // namespace grpokit::detail
