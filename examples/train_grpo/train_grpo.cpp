// train_grpo: a complete small GRPO trainer. The policy, sampling and Adam are in this example;
// advantages, log-probs, the loss and d loss / d logits come from grpokit (host path).
#include <cstdio>
#include <cstdlib>
#include <exception>
#if defined(_OPENMP)
#include <omp.h>
#endif

#include <grpokit/grpokit.hpp>

#include "options.hpp"
#include "trainer.hpp"

namespace {

// The baseline and the mask are compile-time policy axes: map the run-time names onto one
// grpokit::policy<Baseline, Mask> instantiation of the trainer.
template <class Baseline>
int with_mask(const train_grpo::options& o) {
  if (o.mask == "trust_region") return train_grpo::train<grpokit::policy<Baseline, grpokit::mask::trust_region>>(o);
  if (o.mask == "importance") return train_grpo::train<grpokit::policy<Baseline, grpokit::mask::importance>>(o);
  return train_grpo::train<grpokit::policy<Baseline, grpokit::mask::padding>>(o);
}

int dispatch(const train_grpo::options& o) {
  if (o.baseline == "median") return with_mask<grpokit::baseline::median>(o);
  if (o.baseline == "leave_one_out") return with_mask<grpokit::baseline::leave_one_out>(o);
  if (o.baseline == "ess_scaled") return with_mask<grpokit::baseline::ess_scaled>(o);
  return with_mask<grpokit::baseline::mean>(o);
}

}  // namespace

int main(int argc, char** argv) {
  train_grpo::options o;
  try {
    o = train_grpo::parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_grpo: %s\n%s", e.what(), train_grpo::usage);
    return 2;
  }
  if (o.device == "cuda") {
    std::fprintf(stderr,
                 "train_grpo: --device cuda is not available: this example is built for the host only and "
                 "runs its loss with grpokit::host::fused_loss. A GPU trainer would call "
                 "grpokit::device::fused_loss (<grpokit/device/grpokit.cuh>) from a .cu file built with nvcc.\n");
    return 2;
  }
#if defined(_OPENMP)
  // grpokit's host loops run over rows in parallel, but rows of 28 logits are too short to pay for
  // a thread team (on a busy 2-core machine it is several times slower). OMP_NUM_THREADS wins.
  if (std::getenv("OMP_NUM_THREADS") == nullptr) omp_set_num_threads(1);
#endif
  try {
    return dispatch(o);
  } catch (const std::exception& e) {  // grpokit::error, an unwritable --csv
    std::fprintf(stderr, "train_grpo: %s\n", e.what());
    return 1;
  }
}
