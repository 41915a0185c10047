#pragma once
// Correctly rounded arithmetic that no compiler may fuse into an FMA.
// The batch-invariant path is written with these so that the host loop and the CUDA kernel
// execute the very same IEEE operations in the same order and agree bit for bit.
// On the host a product passes through an empty asm statement before it can be used, so that
// GCC/Clang cannot fuse it into an FMA even under -ffp-contract=fast -mfma; on other compilers
// build with -ffp-contract=off (docs/reduction.md).
#include "../detail/macros.hpp"

namespace grpokit::math {

// NAME_rn(a, b) = a OP b, rounded to nearest, never contracted: the CUDA intrinsics on the device,
// the plain operator on the host.
// The f32 device versions are inline PTX without .ftz, so that -ftz=true / --use_fast_math cannot
// flush the subnormals exp_bi produces (the host keeps them).
#if defined(GRPOKIT_ON_DEVICE)
#define GRPOKIT_RN_OP(name, op, ptx, d_intrinsic)                         \
  GRPOKIT_HD inline float name(float a, float b) {                       \
    float r;                                                             \
    asm(ptx " %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));                  \
    return r;                                                            \
  }                                                                      \
  GRPOKIT_HD inline double name(double a, double b) { return d_intrinsic(a, b); }
#else
#define GRPOKIT_RN_OP(name, op, f_intrinsic, d_intrinsic)               \
  GRPOKIT_HD inline float name(float a, float b) { return a op b; }     \
  GRPOKIT_HD inline double name(double a, double b) { return a op b; }
#endif
GRPOKIT_RN_OP(add_rn, +, "add.rn.f32", __dadd_rn)
GRPOKIT_RN_OP(sub_rn, -, "sub.rn.f32", __dsub_rn)
#if defined(GRPOKIT_ON_DEVICE)
GRPOKIT_RN_OP(mul_rn, *, "mul.rn.f32", __dmul_rn)
#else
}  // namespace grpokit::math

namespace grpokit::detail {
template <class R>
inline R materialize(R x) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __asm__("" : "+x"(x));
#elif defined(__GNUC__) && defined(__aarch64__)
  __asm__("" : "+w"(x));
#endif
  return x;
}
}  // namespace grpokit::detail

namespace grpokit::math {
GRPOKIT_HD inline float mul_rn(float a, float b) { return detail::materialize(a * b); }
GRPOKIT_HD inline double mul_rn(double a, double b) { return detail::materialize(a * b); }
#endif
GRPOKIT_RN_OP(div_rn, /, "div.rn.f32", __ddiv_rn)
#undef GRPOKIT_RN_OP

}  // namespace grpokit::math
