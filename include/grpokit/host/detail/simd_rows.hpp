#pragma once
// The host's SIMD row kernels per target (simd_row_kernels.inl over simd_avx2.hpp and
// simd_avx512.hpp) and the dispatch to the target of isa.hpp. Where GRPOKIT_HOST_SIMD is not
// defined, with_simd_rows finds no target and the portable loops of rows.hpp run.
#include <cstdint>
#include <limits>

#include "../../math/exp_branchless.hpp"
#include "../../math/online_lse.hpp"
#include "../../math/storage.hpp"
#include "isa.hpp"

#if defined(GRPOKIT_HOST_SIMD)
// GCC 12 reports its own intrinsics' undefined pass-through operands (_mm512_undefined_ps) as
// uninitialised once they are inlined (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "simd_avx2.hpp"
#include "simd_avx512.hpp"

namespace grpokit::detail {

namespace avx512 {
using V = avx512_vec;
#define GRPOKIT_SIMD_INLINE GRPOKIT_AVX512_INLINE
#define GRPOKIT_SIMD_ENTRY GRPOKIT_AVX512_TARGET inline
#include "simd_row_kernels.inl"
#undef GRPOKIT_SIMD_INLINE
#undef GRPOKIT_SIMD_ENTRY
}  // namespace avx512

namespace avx2 {
using V = avx2_vec;
#define GRPOKIT_SIMD_INLINE GRPOKIT_AVX2_INLINE
#define GRPOKIT_SIMD_ENTRY GRPOKIT_AVX2_TARGET inline
#include "simd_row_kernels.inl"
#undef GRPOKIT_SIMD_INLINE
#undef GRPOKIT_SIMD_ENTRY
}  // namespace avx2

}  // namespace grpokit::detail
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

namespace grpokit::detail {

// Storage the SIMD kernels read and write: fp32, fp16, bf16 (float accumulation).
template <class S>
constexpr bool simd_storage = storage_traits<S>::supported && (storage_traits<S>::kind == storage_kind::f32 ||
                                                               storage_traits<S>::kind == storage_kind::f16 ||
                                                               storage_traits<S>::kind == storage_kind::bf16);

// Calls f(rows) with the active target's kernels (avx512::rows or avx2::rows) and returns true, or
// returns false where the portable loops apply (that target, or storage the kernels do not take).
template <class S, class F>
bool with_simd_rows(F&& f) {
#if defined(GRPOKIT_HOST_SIMD)
  if constexpr (simd_storage<S>) {
    switch (active_isa()) {
      case host_isa::avx512: f(avx512::rows{}); return true;
      case host_isa::avx2: f(avx2::rows{}); return true;
      default: break;
    }
  }
#endif
  (void)f;
  return false;
}

}  // namespace grpokit::detail
