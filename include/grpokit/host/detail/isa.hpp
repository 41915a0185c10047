#pragma once
// The instruction set of the host's vectorised rows, chosen at run time whatever flags the user
// compiles with: the best the CPU has (AVX-512, AVX2 + FMA, else the portable loops of rows.hpp),
// capped by the environment variable GRPOKIT_HOST_ISA=portable|avx2|avx512 (read once). The SIMD
// targets exist on x86-64 with GCC or Clang (also as nvcc's host compiler); define
// GRPOKIT_NO_HOST_SIMD to compile the portable loops only.
#include <atomic>
#include <cstdlib>
#include <cstring>

#if !defined(GRPOKIT_NO_HOST_SIMD) && (defined(__x86_64__) || defined(_M_X64)) && \
    (defined(__GNUC__) || defined(__clang__))
#define GRPOKIT_HOST_SIMD 1
#include <cpuid.h>
#endif

namespace grpokit::detail {

enum class host_isa : int { portable = 0, avx2 = 1, avx512 = 2 };

inline const char* isa_name(host_isa isa) {
  switch (isa) {
    case host_isa::avx512: return "avx512";
    case host_isa::avx2: return "avx2";
    default: return "portable";
  }
}

// The best target this CPU and its operating system run, from CPUID and XCR0 (not
// __builtin_cpu_supports: Clang 14 does not know "f16c"). AVX2 needs FMA and F16C (fp16
// conversions) and the AVX state; AVX-512 needs F, BW, VL, DQ and the opmask and ZMM states.
inline host_isa cpu_isa() {
#if defined(GRPOKIT_HOST_SIMD)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return host_isa::portable;
  const bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28), f16c = c & (1u << 29);
  if (!(fma && osxsave && avx && f16c)) return host_isa::portable;
  unsigned low = 0, high = 0;
  __asm__ volatile("xgetbv" : "=a"(low), "=d"(high) : "c"(0));
  const unsigned long long xcr0 = (static_cast<unsigned long long>(high) << 32) | low;
  if ((xcr0 & 0x6ull) != 0x6ull) return host_isa::portable;  // XMM and YMM state
  if (__get_cpuid_max(0, nullptr) < 7) return host_isa::portable;
  __cpuid_count(7, 0, a, b, c, d);
  if (!(b & (1u << 5))) return host_isa::portable;  // AVX2
  const bool avx512 = (b & (1u << 16)) && (b & (1u << 17)) && (b & (1u << 30)) && (b & (1u << 31)) &&
                      (xcr0 & 0xe0ull) == 0xe0ull;  // F, DQ, BW, VL; opmask, ZMM 0-15 high halves, ZMM 16-31
  return avx512 ? host_isa::avx512 : host_isa::avx2;
#else
  return host_isa::portable;
#endif
}

// `wanted` if the CPU runs it, else the best it does.
inline host_isa capped_isa(host_isa wanted) {
  const host_isa cpu = cpu_isa();
  return static_cast<int>(wanted) < static_cast<int>(cpu) ? wanted : cpu;
}

// The CPU's best, capped by GRPOKIT_HOST_ISA (an unknown value leaves it uncapped).
inline host_isa environment_isa() {
  const char* v = std::getenv("GRPOKIT_HOST_ISA");
  if (v != nullptr && std::strcmp(v, "portable") == 0) return host_isa::portable;
  if (v != nullptr && std::strcmp(v, "avx2") == 0) return capped_isa(host_isa::avx2);
  return cpu_isa();
}

inline std::atomic<int>& isa_slot() {
  static std::atomic<int> slot{static_cast<int>(environment_isa())};
  return slot;
}

// The target the row loops use now.
inline host_isa active_isa() { return static_cast<host_isa>(isa_slot().load(std::memory_order_relaxed)); }

// Selects the target for the following calls (tests compare the targets in one process); returns
// the target in effect, `wanted` capped by the CPU. Not for use while another thread runs rows.
inline host_isa use_isa(host_isa wanted) {
  const host_isa isa = capped_isa(wanted);
  isa_slot().store(static_cast<int>(isa), std::memory_order_relaxed);
  return isa;
}

}  // namespace grpokit::detail
