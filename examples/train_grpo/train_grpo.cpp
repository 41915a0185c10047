// train_grpo: a complete small GRPO trainer. The policy, sampling and Adam are in this example;
// advantages, log-probs, the loss and d loss / d logits come from grpokit: its host path, or its
// device path with --device cuda (device_loss.cu, built when CMake finds nvcc).
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
  using train_grpo::mask_kind;
  switch (o.mask) {
    case mask_kind::padding:
      return train_grpo::train<grpokit::policy<Baseline, grpokit::mask::padding>>(o);
    case mask_kind::trust_region:
      return train_grpo::train<grpokit::policy<Baseline, grpokit::mask::trust_region>>(o);
    case mask_kind::importance:
      return train_grpo::train<grpokit::policy<Baseline, grpokit::mask::importance>>(o);
  }
  return 2;  // unreachable: parse() accepts only the names of the table
}

int dispatch(const train_grpo::options& o) {
  using train_grpo::baseline_kind;
  switch (o.baseline) {
    case baseline_kind::mean:
      return with_mask<grpokit::baseline::mean>(o);
    case baseline_kind::median:
      return with_mask<grpokit::baseline::median>(o);
    case baseline_kind::leave_one_out:
      return with_mask<grpokit::baseline::leave_one_out>(o);
    case baseline_kind::ess_scaled:
      return with_mask<grpokit::baseline::ess_scaled>(o);
  }
  return 2;
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
#if defined(_OPENMP)
  // grpokit's host loops run over rows in parallel, but rows of 28 logits are too short to pay for
  // a thread team (on a busy 2-core machine it is several times slower). OMP_NUM_THREADS wins.
  if (std::getenv("OMP_NUM_THREADS") == nullptr) omp_set_num_threads(1);
#endif
  try {
    return dispatch(o);
  } catch (const train_grpo::no_gpu& e) {  // the exit code of a skipped test (CTest SKIP_RETURN_CODE)
    std::fprintf(stderr, "train_grpo: %s\n", e.what());
    return 77;
  } catch (const std::exception& e) {  // grpokit::error, a CUDA error, an unwritable --csv
    std::fprintf(stderr, "train_grpo: %s\n", e.what());
    return 1;
  }
}
