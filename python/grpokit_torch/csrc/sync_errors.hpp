#pragma once
// Whether the CUDA operators check for data errors before they return. On (the default): each call
// reads its status back (one small copy and a synchronisation of the current stream) and raises
// grpokit's message, as the CPU operators do; never while a CUDA graph is being captured. Off
// (grpokit_torch.set_sync_errors(False)): nothing synchronises, and a data error turns every output
// of the call into NaN (device_call.cuh), never a silent number.
#include <atomic>

namespace grpokit_torch {

inline std::atomic<bool>& sync_errors() {
  static std::atomic<bool> on{true};
  return on;
}

}  // namespace grpokit_torch
