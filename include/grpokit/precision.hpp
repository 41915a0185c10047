#pragma once
// precision<Storage, Accum>: the storage type of logits (and dlogits), and the accumulation type
// of every reduction and of the per-token loss math (log-probs, LSE, ratios are Accum).
#include <type_traits>

#include "axis.hpp"
#include "math/storage.hpp"

namespace grpokit {

template <class Storage = float, class Accum = float>
struct precision {
  static_assert(storage_traits<Storage>::supported,
                "grpokit::precision: Storage must be float, double, __half or __nv_bfloat16 "
                "(include <cuda_fp16.h>/<cuda_bf16.h> for the 16-bit types)");
  static_assert(std::is_same<Accum, float>::value || std::is_same<Accum, double>::value,
                "grpokit::precision: Accum must be float or double (all loss math is at least fp32)");
  static_assert(sizeof(Accum) >= sizeof(Storage),
                "grpokit::precision: Accum must be at least as wide as Storage");
  using policy_axis = axis::precision;
  using storage_type = Storage;
  using accum_type = Accum;
};

}  // namespace grpokit
