#pragma once
// The DP x TP grid of an MPI test: GRPOKIT_TP ranks per vocabulary group (consecutive world ranks),
// the rest data parallel; the two communicators split from MPI_COMM_WORLD once.
#include <mpi.h>

#include <cstdio>
#include <cstdlib>

namespace mpi_grid {

struct grid {
  int rank = 0, size = 1, tp_size = 1, dp_size = 1, tp_rank = 0, dp_rank = 0;
  MPI_Comm dp = MPI_COMM_NULL, tp = MPI_COMM_NULL;
};

inline const grid& the_grid() {
  static const grid g = [] {
    grid r;
    MPI_Comm_rank(MPI_COMM_WORLD, &r.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &r.size);
    const char* env = std::getenv("GRPOKIT_TP");
    r.tp_size = env != nullptr ? std::atoi(env) : 1;
    if (r.tp_size < 1 || r.size % r.tp_size != 0) {
      std::fprintf(stderr, "GRPOKIT_TP=%d does not divide %d ranks\n", r.tp_size, r.size);
      MPI_Abort(MPI_COMM_WORLD, 2);
    }
    r.dp_size = r.size / r.tp_size;
    r.tp_rank = r.rank % r.tp_size;
    r.dp_rank = r.rank / r.tp_size;
    MPI_Comm_split(MPI_COMM_WORLD, r.dp_rank, r.tp_rank, &r.tp);
    MPI_Comm_split(MPI_COMM_WORLD, r.tp_rank, r.dp_rank, &r.dp);
    return r;
  }();
  return g;
}

}  // namespace mpi_grid
