// train_grpo: a complete small GRPO trainer. The policy, sampling and Adam are in this example;
// advantages, log-probs, the loss and d loss / d logits come from grpokit: its host path, or its
// device path with --device cuda (device_loss.cu, built when CMake finds nvcc).
#include <cstdio>
#include <cstdlib>
#include <exception>
#if defined(TRAIN_GRPO_WITH_MPI)
#include <mpi.h>

#include <grpokit/comm/mpi.hpp>
#endif
#if defined(_OPENMP)
#include <omp.h>
#endif

#include <grpokit/grpokit.hpp>

#include "options.hpp"
#include "trainer.hpp"

namespace {

// The baseline and the mask are compile-time policy axes: map the run-time names onto one
// grpokit::policy<Baseline, Mask, Extra...> instantiation of the trainer (Extra: the reduction
// order of a data-parallel run).
template <class Baseline, class... Extra>
int with_mask(const train_grpo::options& o, const train_grpo::dp_comm* comm) {
  using train_grpo::mask_kind;
  switch (o.mask) {
    case mask_kind::padding:
      return train_grpo::train<grpokit::policy<Baseline, grpokit::mask::padding, Extra...>>(o, comm);
    case mask_kind::trust_region:
      return train_grpo::train<grpokit::policy<Baseline, grpokit::mask::trust_region, Extra...>>(o, comm);
    case mask_kind::importance:
      return train_grpo::train<grpokit::policy<Baseline, grpokit::mask::importance, Extra...>>(o, comm);
  }
  return 2;  // unreachable: parse() accepts only the names of the table
}

template <class... Extra>
int dispatch(const train_grpo::options& o, const train_grpo::dp_comm* comm) {
  using train_grpo::baseline_kind;
  switch (o.baseline) {
    case baseline_kind::mean:
      return with_mask<grpokit::baseline::mean, Extra...>(o, comm);
    case baseline_kind::median:
      return with_mask<grpokit::baseline::median, Extra...>(o, comm);
    case baseline_kind::leave_one_out:
      return with_mask<grpokit::baseline::leave_one_out, Extra...>(o, comm);
    case baseline_kind::ess_scaled:
      return with_mask<grpokit::baseline::ess_scaled, Extra...>(o, comm);
  }
  return 2;
}

int run(const train_grpo::options& o) {
#if defined(TRAIN_GRPO_WITH_MPI)
  if (o.data_parallel) {
    struct session {  // MPI only for --parallel mpi (a singleton MPI_Init needs an MPI runtime)
      session() { MPI_Init(nullptr, nullptr); }
      ~session() { MPI_Finalize(); }
    } mpi;
    // grpokit's MPI communicator behind the callable adapter: the trainer does not depend on MPI
    const grpokit::mpi_communicator world(MPI_COMM_WORLD);
    const train_grpo::dp_comm comm(
        world.rank(), world.size(),
        [world](const void* send, void* recv, std::size_t bytes) { world.all_gather(send, recv, bytes); });
    try {
      return dispatch<grpokit::reduction::batch_invariant>(o, &comm);
    } catch (const std::exception& e) {
      // an error on one rank (an unwritable --csv on rank 0) must not leave the others waiting in a
      // collective: stop the whole job
      std::fprintf(stderr, "train_grpo: rank %d: %s\n", world.rank(), e.what());
      MPI_Abort(MPI_COMM_WORLD, 1);
      return 1;
    }
  }
#endif
  return dispatch<>(o, nullptr);
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
    return run(o);
  } catch (const train_grpo::no_gpu& e) {  // the exit code of a skipped test (CTest SKIP_RETURN_CODE)
    std::fprintf(stderr, "train_grpo: %s\n", e.what());
    return 77;
  } catch (const std::exception& e) {  // grpokit::error, a CUDA error, an unwritable --csv
    std::fprintf(stderr, "train_grpo: %s\n", e.what());
    return 1;
  }
}
