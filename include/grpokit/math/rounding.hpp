#pragma once
// Correctly rounded arithmetic that no compiler may fuse into an FMA.
// The batch-invariant path is written with these so that the host loop and the CUDA kernel
// execute the very same IEEE operations in the same order and agree bit for bit.
// (On the host, compile with -ffp-contract=off or an ISO -std=c++17 mode; see docs/reduction.md.)
#include "../detail/macros.hpp"

namespace grpokit::math {

GRPOKIT_HD inline float add_rn(float a, float b) {
#if defined(GRPOKIT_ON_DEVICE)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
GRPOKIT_HD inline double add_rn(double a, double b) {
#if defined(GRPOKIT_ON_DEVICE)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
GRPOKIT_HD inline float sub_rn(float a, float b) {
#if defined(GRPOKIT_ON_DEVICE)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
GRPOKIT_HD inline double sub_rn(double a, double b) {
#if defined(GRPOKIT_ON_DEVICE)
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}
GRPOKIT_HD inline float mul_rn(float a, float b) {
#if defined(GRPOKIT_ON_DEVICE)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
GRPOKIT_HD inline double mul_rn(double a, double b) {
#if defined(GRPOKIT_ON_DEVICE)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
GRPOKIT_HD inline float div_rn(float a, float b) {
#if defined(GRPOKIT_ON_DEVICE)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
GRPOKIT_HD inline double div_rn(double a, double b) {
#if defined(GRPOKIT_ON_DEVICE)
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}

}  // namespace grpokit::math
