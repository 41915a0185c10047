#pragma once
// Loads and stores of the logits storage types, done on the raw bits so that the host and the
// device convert identically (fp16/bf16 -> float is exact; float -> fp16/bf16 rounds to nearest even).
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../detail/macros.hpp"

#if defined(__has_include)
#if __has_include(<cuda_fp16.h>) && __has_include(<cuda_bf16.h>)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define GRPOKIT_HAS_CUDA_HALF 1
#endif
#endif

namespace grpokit {

enum class storage_kind { f32, f64, f16, bf16 };

template <class T>
struct storage_traits {
  static constexpr bool supported = false;
};
template <>
struct storage_traits<float> {
  static constexpr bool supported = true;
  static constexpr storage_kind kind = storage_kind::f32;
};
template <>
struct storage_traits<double> {
  static constexpr bool supported = true;
  static constexpr storage_kind kind = storage_kind::f64;
};
#if defined(GRPOKIT_HAS_CUDA_HALF)
template <>
struct storage_traits<__half> {
  static constexpr bool supported = true;
  static constexpr storage_kind kind = storage_kind::f16;
};
template <>
struct storage_traits<__nv_bfloat16> {
  static constexpr bool supported = true;
  static constexpr storage_kind kind = storage_kind::bf16;
};
#endif

namespace detail {
template <class To, class From>
GRPOKIT_HD inline To bit_cast(const From& from) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast needs equal sizes");
  To to;
  std::memcpy(static_cast<void*>(&to), static_cast<const void*>(&from), sizeof(To));
  return to;
}

GRPOKIT_HD inline float half_bits_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t man = h & 0x3ffu;
  std::uint32_t bits;
  if (exp == 0x1fu) {
    bits = sign | 0x7f800000u | (man << 13);  // inf / nan
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {  // subnormal half -> normal float
    int e = -1;
    do {
      ++e;
      man <<= 1;
    } while ((man & 0x400u) == 0);
    bits = sign | ((112u - static_cast<std::uint32_t>(e)) << 23) | ((man & 0x3ffu) << 13);
  }
  return bit_cast<float>(bits);
}

GRPOKIT_HD inline std::uint16_t float_to_half_bits(float f) {
  const std::uint32_t x = bit_cast<std::uint32_t>(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  const std::uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf or nan
    return static_cast<std::uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
  }
  if (abs >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds to inf
  if (abs < 0x38800000u) {  // result is subnormal or zero: round abs * 2^24 to an integer
    if (abs < 0x33000000u) return sign;  // below half of the smallest subnormal
    const std::uint32_t e = abs >> 23;
    const std::uint32_t m = (abs & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126u - e;  // 14..24 (value = m * 2^(e-150), target unit 2^-24)
    std::uint32_t q = m >> shift;
    const std::uint32_t rem = m & ((1u << shift) - 1u);
    const std::uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return static_cast<std::uint16_t>(sign | q);
  }
  // normal: rebias exponent, round mantissa 23 -> 10 bits to nearest even
  std::uint32_t r = abs - 0x38000000u;  // exponent bias 127 -> 15
  const std::uint32_t lsb = (r >> 13) & 1u;
  r += 0xfffu + lsb;
  return static_cast<std::uint16_t>(sign | (r >> 13));
}

GRPOKIT_HD inline float bf16_bits_to_float(std::uint16_t h) {
  return bit_cast<float>(static_cast<std::uint32_t>(h) << 16);
}

GRPOKIT_HD inline std::uint16_t float_to_bf16_bits(float f) {
  std::uint32_t x = bit_cast<std::uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);  // quiet nan
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<std::uint16_t>(x >> 16);
}
}  // namespace detail

namespace math {

// Converts one stored element to the accumulation type `Acc`.
template <class Acc, class T>
GRPOKIT_HD inline Acc load(const T& x) {
  static_assert(storage_traits<T>::supported, "grpokit: unsupported storage type");
  if constexpr (storage_traits<T>::kind == storage_kind::f16) {
    return static_cast<Acc>(detail::half_bits_to_float(detail::bit_cast<std::uint16_t>(x)));
  } else if constexpr (storage_traits<T>::kind == storage_kind::bf16) {
    return static_cast<Acc>(detail::bf16_bits_to_float(detail::bit_cast<std::uint16_t>(x)));
  } else {
    return static_cast<Acc>(x);
  }
}

// Rounds a value of the accumulation type to the storage type (round to nearest even).
template <class T, class Acc>
GRPOKIT_HD inline T store(Acc x) {
  static_assert(storage_traits<T>::supported, "grpokit: unsupported storage type");
  if constexpr (storage_traits<T>::kind == storage_kind::f16) {
    return detail::bit_cast<T>(detail::float_to_half_bits(static_cast<float>(x)));
  } else if constexpr (storage_traits<T>::kind == storage_kind::bf16) {
    return detail::bit_cast<T>(detail::float_to_bf16_bits(static_cast<float>(x)));
  } else {
    return static_cast<T>(x);
  }
}

}  // namespace math
}  // namespace grpokit
