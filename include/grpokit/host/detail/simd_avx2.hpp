#pragma once
// Sixteen float lanes in two AVX2 registers (lanes 0-7 and 8-15), the operations of
// simd_row_kernels.inl. Sixteen lanes, not eight, so that the AVX2 and AVX-512 targets compute the
// same bits (see simd_avx512.hpp). Every function carries its target. Include through simd_rows.hpp.
#include <immintrin.h>

#include <cstdint>
#include <type_traits>

#include "../../math/storage.hpp"

#define GRPOKIT_AVX2_TARGET __attribute__((target("avx2,fma,f16c")))
#define GRPOKIT_AVX2_INLINE GRPOKIT_AVX2_TARGET __attribute__((always_inline)) inline

namespace grpokit::detail {

struct avx2_vec {
  struct vec {
    __m256 lo, hi;
  };
  using mask = vec;  // all ones in a true lane

  GRPOKIT_AVX2_INLINE static vec make(__m256 lo, __m256 hi) {
    vec r;
    r.lo = lo;
    r.hi = hi;
    return r;
  }
  GRPOKIT_AVX2_INLINE static vec set1(float a) { return make(_mm256_set1_ps(a), _mm256_set1_ps(a)); }

  template <class S>
  GRPOKIT_AVX2_INLINE static __m256 load8(const S* p) {
    if constexpr (storage_traits<S>::kind == storage_kind::f32) {
      return _mm256_loadu_ps(p);
    } else {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      if constexpr (storage_traits<S>::kind == storage_kind::f16)
        return _mm256_cvtph_ps(h);
      else
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
  }
  template <class S>
  GRPOKIT_AVX2_INLINE static vec load(const S* p) { return make(load8(p), load8(p + 8)); }

  // bf16 bits of eight floats in the low halves of 32-bit lanes (see avx512_vec::bf16_bits).
  GRPOKIT_AVX2_INLINE static __m256i bf16_bits8(__m256 v) {
    const __m256i u = _mm256_castps_si256(v);
    const __m256i high = _mm256_srli_epi32(u, 16);
    const __m256i rounded = _mm256_srli_epi32(
        _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), _mm256_and_si256(high, _mm256_set1_epi32(1))),
        16);
    const __m256i nan =
        _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
    return _mm256_blendv_epi8(rounded, _mm256_or_si256(high, _mm256_set1_epi32(0x40)), nan);
  }
  // The sixteen 16-bit values of v in order.
  template <class Out>
  GRPOKIT_AVX2_INLINE static __m256i half_or_bf16_bits(vec v) {
    if constexpr (storage_traits<Out>::kind == storage_kind::f16) {
      const __m128i lo = _mm256_cvtps_ph(v.lo, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      const __m128i hi = _mm256_cvtps_ph(v.hi, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      return _mm256_set_m128i(hi, lo);
    } else {  // packus interleaves the 128-bit halves: 0-3, 8-11, 4-7, 12-15; the permute orders them
      return _mm256_permute4x64_epi64(_mm256_packus_epi32(bf16_bits8(v.lo), bf16_bits8(v.hi)), 0xd8);
    }
  }
  template <class Out>
  GRPOKIT_AVX2_INLINE static void store(Out* p, vec v) {
    if constexpr (storage_traits<Out>::kind == storage_kind::f32) {
      _mm256_storeu_ps(p, v.lo);
      _mm256_storeu_ps(p + 8, v.hi);
    } else {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), half_or_bf16_bits<Out>(v));
    }
  }
  template <class Out>
  GRPOKIT_AVX2_INLINE static void stream(Out* p, vec v) {
    if constexpr (storage_traits<Out>::kind == storage_kind::f32) {
      _mm256_stream_ps(p, v.lo);
      _mm256_stream_ps(p + 8, v.hi);
    } else {
      _mm256_stream_si256(reinterpret_cast<__m256i*>(p), half_or_bf16_bits<Out>(v));
    }
  }
  GRPOKIT_AVX2_INLINE static void fence() { _mm_sfence(); }

  GRPOKIT_AVX2_INLINE static vec add(vec a, vec b) { return make(_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)); }
  GRPOKIT_AVX2_INLINE static vec sub(vec a, vec b) { return make(_mm256_sub_ps(a.lo, b.lo), _mm256_sub_ps(a.hi, b.hi)); }
  GRPOKIT_AVX2_INLINE static vec mul(vec a, vec b) { return make(_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)); }
  GRPOKIT_AVX2_INLINE static vec fma(vec a, vec b, vec c) {
    return make(_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi));
  }
  GRPOKIT_AVX2_INLINE static vec max(vec a, vec b) { return make(_mm256_max_ps(a.lo, b.lo), _mm256_max_ps(a.hi, b.hi)); }
  GRPOKIT_AVX2_INLINE static __m256 clamp8(__m256 x, float lo, float hi) {
    return _mm256_min_ps(_mm256_set1_ps(hi), _mm256_max_ps(_mm256_set1_ps(lo), x));
  }
  GRPOKIT_AVX2_INLINE static vec clamp(vec x, float lo, float hi) { return make(clamp8(x.lo, lo, hi), clamp8(x.hi, lo, hi)); }
  GRPOKIT_AVX2_INLINE static vec round(vec x) {
    return make(_mm256_round_ps(x.lo, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                _mm256_round_ps(x.hi, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  // y 2^k as (y 2^(k>>1)) 2^(k - (k>>1)): two normal factors, the first product exact, so one
  // rounding, as vscalefps.
  GRPOKIT_AVX2_INLINE static __m256 scale8(__m256 y, __m256 k) {
    const __m256i ki = _mm256_cvtps_epi32(k);
    const __m256i k1 = _mm256_srai_epi32(ki, 1);
    const __m256i k2 = _mm256_sub_epi32(ki, k1);
    const __m256i bias = _mm256_set1_epi32(127);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k1, bias), 23));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(y, s1), s2);
  }
  GRPOKIT_AVX2_INLINE static vec scale(vec y, vec k) { return make(scale8(y.lo, k.lo), scale8(y.hi, k.hi)); }

  GRPOKIT_AVX2_INLINE static mask ge(vec a, vec b) {
    return make(_mm256_cmp_ps(a.lo, b.lo, _CMP_GE_OQ), _mm256_cmp_ps(a.hi, b.hi, _CMP_GE_OQ));
  }
  GRPOKIT_AVX2_INLINE static vec zero_unless(mask m, vec a) { return make(_mm256_and_ps(m.lo, a.lo), _mm256_and_ps(m.hi, a.hi)); }

  // flags + 0 x: stays 0 while x is finite, NaN from the first NaN / Inf on (one FMA per vector)
  GRPOKIT_AVX2_INLINE static vec note_non_finite(vec flags, vec x) { return fma(x, set1(0.f), flags); }
  GRPOKIT_AVX2_INLINE static bool any_nan(vec v) {
    return _mm256_movemask_ps(_mm256_or_ps(_mm256_cmp_ps(v.lo, v.lo, _CMP_UNORD_Q), _mm256_cmp_ps(v.hi, v.hi, _CMP_UNORD_Q))) != 0;
  }

  // The sum of eight lanes by the tree l + l+4, l + l+2, l + l+1.
  GRPOKIT_AVX2_INLINE static float sum8(__m256 v) {
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
  }
  GRPOKIT_AVX2_INLINE static float sum(vec v) { return sum8(_mm256_add_ps(v.lo, v.hi)); }
  GRPOKIT_AVX2_INLINE static float max8(__m256 m8) {
    const __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps(m8, 1));
    const __m128 m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    return _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)));
  }
  GRPOKIT_AVX2_INLINE static float max_of(vec v) { return max8(_mm256_max_ps(v.lo, v.hi)); }
};

}  // namespace grpokit::detail
