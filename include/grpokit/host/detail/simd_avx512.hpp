#pragma once
// Sixteen float lanes in one AVX-512 register, the operations of simd_row_kernels.inl. Every
// function carries its target, so that the header compiles whatever flags the user gives; the
// results are bit for bit those of avx2_vec (simd_avx2.hpp): the same IEEE operations in the same
// lanes. Include through simd_rows.hpp.
#include <immintrin.h>

#include <cstdint>
#include <type_traits>

#include "../../math/storage.hpp"
#include "simd_avx2.hpp"

#define GRPOKIT_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define GRPOKIT_AVX512_INLINE GRPOKIT_AVX512_TARGET __attribute__((always_inline)) inline

namespace grpokit::detail {

struct avx512_vec {
  using vec = __m512;
  using mask = __mmask16;
  // The zero-masked forms with every lane selected: GCC 12 warns (maybe-uninitialized) about the
  // undefined pass-through operand of the unmasked max, min, roundscale, scalef and extract.
  static constexpr __mmask16 all = 0xffff;

  GRPOKIT_AVX512_INLINE static vec set1(float a) { return _mm512_set1_ps(a); }

  // Sixteen stored values as floats (exact for every storage type).
  template <class S>
  GRPOKIT_AVX512_INLINE static vec load(const S* p) {
    if constexpr (storage_traits<S>::kind == storage_kind::f32) {
      return _mm512_loadu_ps(p);
    } else {
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
      if constexpr (storage_traits<S>::kind == storage_kind::f16) {
        return _mm512_cvtph_ps(h);
      } else {
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
      }
    }
  }
  // The bf16 bits of sixteen floats, rounded to nearest even, NaN kept quiet: the bit arithmetic of
  // math::store (the CPU's vcvtneps2bf16 flushes subnormals, which dlogits can be).
  GRPOKIT_AVX512_INLINE static __m256i bf16_bits(vec v) {
    const __m512i u = _mm512_castps_si512(v);
    const __m512i high = _mm512_srli_epi32(u, 16);
    const __m512i rounded =
        _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)),
                                           _mm512_and_si512(high, _mm512_set1_epi32(1))),
                          16);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                                  _mm512_set1_epi32(0x7f800000));
    return _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(rounded, nan, _mm512_or_si512(high, _mm512_set1_epi32(0x40))));
  }
  template <class Out>
  GRPOKIT_AVX512_INLINE static __m256i half_or_bf16_bits(vec v) {
    if constexpr (storage_traits<Out>::kind == storage_kind::f16)
      return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    else
      return bf16_bits(v);
  }
  template <class Out>
  GRPOKIT_AVX512_INLINE static void store(Out* p, vec v) {
    if constexpr (storage_traits<Out>::kind == storage_kind::f32)
      _mm512_storeu_ps(p, v);
    else
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), half_or_bf16_bits<Out>(v));
  }
  // A non-temporal store; p is aligned to stream_bytes.
  template <class Out>
  GRPOKIT_AVX512_INLINE static void stream(Out* p, vec v) {
    if constexpr (storage_traits<Out>::kind == storage_kind::f32)
      _mm512_stream_ps(p, v);
    else
      _mm256_stream_si256(reinterpret_cast<__m256i*>(p), half_or_bf16_bits<Out>(v));
  }
  GRPOKIT_AVX512_INLINE static void fence() { _mm_sfence(); }

  GRPOKIT_AVX512_INLINE static vec add(vec a, vec b) { return _mm512_add_ps(a, b); }
  GRPOKIT_AVX512_INLINE static vec sub(vec a, vec b) { return _mm512_sub_ps(a, b); }
  GRPOKIT_AVX512_INLINE static vec mul(vec a, vec b) { return _mm512_mul_ps(a, b); }
  GRPOKIT_AVX512_INLINE static vec fma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
  GRPOKIT_AVX512_INLINE static vec max(vec a, vec b) { return _mm512_maskz_max_ps(all, a, b); }
  // x clamped to [lo, hi]; a NaN x stays NaN (max / min return their second operand on NaN).
  GRPOKIT_AVX512_INLINE static vec clamp(vec x, float lo, float hi) {
    return _mm512_maskz_min_ps(all, _mm512_set1_ps(hi), _mm512_maskz_max_ps(all, _mm512_set1_ps(lo), x));
  }
  GRPOKIT_AVX512_INLINE static vec round(vec x) {
    return _mm512_maskz_roundscale_ps(all, x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  // y 2^k, rounded once, for integral k in [-150, 128] and y in [0.5, 2]
  GRPOKIT_AVX512_INLINE static vec scale(vec y, vec k) { return _mm512_maskz_scalef_ps(all, y, k); }

  GRPOKIT_AVX512_INLINE static mask ge(vec a, vec b) { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
  GRPOKIT_AVX512_INLINE static vec zero_unless(mask m, vec a) { return _mm512_maskz_mov_ps(m, a); }

  // flags + 0 x: stays 0 while x is finite, NaN from the first NaN / Inf on (one FMA per vector)
  GRPOKIT_AVX512_INLINE static vec note_non_finite(vec flags, vec x) { return fma(x, _mm512_setzero_ps(), flags); }
  GRPOKIT_AVX512_INLINE static bool any_nan(vec v) { return _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) != 0; }

  // The lanes' sum by the fixed tree of avx2_vec::sum (lane l + lane l+8 first).
  GRPOKIT_AVX512_INLINE static float sum(vec v) {
    return avx2_vec::sum8(_mm256_add_ps(low_half(v), high_half(v)));
  }
  // lanes 0-7 and 8-15 (GCC's _mm512_castps512_ps256 is the unmasked extract)
  GRPOKIT_AVX512_INLINE static __m256 low_half(vec v) {
    return _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xff, _mm512_castps_pd(v), 0));
  }
  GRPOKIT_AVX512_INLINE static __m256 high_half(vec v) {
    return _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xff, _mm512_castps_pd(v), 1));
  }
  GRPOKIT_AVX512_INLINE static float max_of(vec v) {
    return avx2_vec::max8(_mm256_max_ps(low_half(v), high_half(v)));
  }
};

}  // namespace grpokit::detail
