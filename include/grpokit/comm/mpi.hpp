#pragma once
// The MPI communicator (host buffers): all_gather is MPI_Allgather of bytes. Including this header
// needs <mpi.h>; nothing else in grpokit does.
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

#include "../communicator.hpp"
#include "../error.hpp"

namespace grpokit {

class mpi_communicator {
 public:
  explicit mpi_communicator(MPI_Comm comm = MPI_COMM_WORLD) : comm_(comm) {
    check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  }
  int rank() const { return rank_; }
  int size() const { return size_; }
  MPI_Comm comm() const { return comm_; }

  void all_gather(const void* send, void* recv, std::size_t bytes) const {
    if (bytes <= max_piece) {
      check(MPI_Allgather(send, static_cast<int>(bytes), MPI_BYTE, recv, static_cast<int>(bytes), MPI_BYTE, comm_),
            "MPI_Allgather");
      return;
    }
    // MPI counts are int: gather pieces and place each rank's piece at its offset
    std::vector<char> piece(static_cast<std::size_t>(size_) * max_piece);
    for (std::size_t at = 0; at < bytes; at += max_piece) {
      const std::size_t n = std::min(max_piece, bytes - at);
      check(MPI_Allgather(static_cast<const char*>(send) + at, static_cast<int>(n), MPI_BYTE, piece.data(),
                          static_cast<int>(n), MPI_BYTE, comm_),
            "MPI_Allgather");
      for (int r = 0; r < size_; ++r)
        std::memcpy(static_cast<char*>(recv) + static_cast<std::size_t>(r) * bytes + at,
                    piece.data() + static_cast<std::size_t>(r) * n, n);
    }
  }

 private:
  static constexpr std::size_t max_piece = std::size_t{1} << 30;
  static void check(int rc, const char* what) {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    detail::fail(what, " failed: ", std::string(text, static_cast<std::size_t>(len)));
  }
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

}  // namespace grpokit
