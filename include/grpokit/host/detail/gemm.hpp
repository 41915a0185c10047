#pragma once
// The matrix products of the host's fused_linear_loss, on row-major Acc (float or double)
// operands: C = beta C + op(A) op(B) with op = identity or transpose, in three forms,
//   nt: C[m, n] = beta C[m, n] + sum_k A[m, k] B[n, k]     logits = hidden W^T
//   nn: C[m, n] = beta C[m, n] + sum_k A[m, k] B[k, n]     dhidden = dlogits W
//   tn: C[m, n] = beta C[m, n] + sum_k A[k, m] B[k, n]     dweight = dlogits^T hidden
// by cblas_sgemm / cblas_dgemm where grpokit was configured with a CBLAS (CMake defines
// GRPOKIT_HAS_CBLAS and links it; use_blas(false) turns it off, for the tests), else by loops
// that sum every element over k in increasing order (the same bits for any thread count) and whose
// inner loops the compiler vectorises (axpy rows; the nt form transposes a panel of B first).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#include "../parallel.hpp"

#if defined(GRPOKIT_HAS_CBLAS)
#include <cblas.h>
#endif

namespace grpokit::detail {

enum class gemm_form { nt, nn, tn };

// Whether the products use the CBLAS grpokit was configured with (true when there is one).
inline std::atomic<bool>& blas_switch() {
#if defined(GRPOKIT_HAS_CBLAS)
  static std::atomic<bool> on{true};
#else
  static std::atomic<bool> on{false};
#endif
  return on;
}
inline bool blas_in_use() { return blas_switch().load(std::memory_order_relaxed); }
// Turns the CBLAS off (or back on where there is one); returns whether it is now in use.
inline bool use_blas(bool on) {
#if defined(GRPOKIT_HAS_CBLAS)
  blas_switch().store(on, std::memory_order_relaxed);
#else
  (void)on;
#endif
  return blas_in_use();
}

#if defined(GRPOKIT_HAS_CBLAS)
inline void blas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, std::int64_t M, std::int64_t N, std::int64_t K,
                      const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float beta, float* C,
                      std::int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, static_cast<int>(M), static_cast<int>(N), static_cast<int>(K), 1.f, A,
              static_cast<int>(lda), B, static_cast<int>(ldb), beta, C, static_cast<int>(ldc));
}
inline void blas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, std::int64_t M, std::int64_t N, std::int64_t K,
                      const double* A, std::int64_t lda, const double* B, std::int64_t ldb, double beta, double* C,
                      std::int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, static_cast<int>(M), static_cast<int>(N), static_cast<int>(K), 1.0, A,
              static_cast<int>(lda), B, static_cast<int>(ldb), beta, C, static_cast<int>(ldc));
}
#endif

// Columns of B^T that the loop form of nt transposes at a time (a K x 64 panel per task).
constexpr std::int64_t gemm_panel = 64;

template <class Acc>
void loop_gemm(gemm_form form, std::int64_t M, std::int64_t N, std::int64_t K, const Acc* A, std::int64_t lda,
               const Acc* B, std::int64_t ldb, Acc beta, Acc* C, std::int64_t ldc) {
  auto start_row = [&](Acc* c) {
    for (std::int64_t n = 0; n < N; ++n) c[n] = beta == Acc(0) ? Acc(0) : beta * c[n];
  };
  if (form == gemm_form::nt) {  // tasks: a panel of 64 columns x a block of 32 rows
    const std::int64_t panels = (N + gemm_panel - 1) / gemm_panel, blocks = (M + 31) / 32;
    parallel_for(panels * blocks, [&](std::int64_t task) {
      const std::int64_t n0 = task / blocks * gemm_panel, width = std::min(gemm_panel, N - n0);
      const std::int64_t m0 = task % blocks * 32, m1 = std::min(M, m0 + 32);
      std::vector<Acc> bt(static_cast<std::size_t>(K * gemm_panel));  // bt[k, j] = B[n0 + j, k]
      for (std::int64_t j = 0; j < width; ++j)
        for (std::int64_t k = 0; k < K; ++k) bt[static_cast<std::size_t>(k * gemm_panel + j)] = B[(n0 + j) * ldb + k];
      for (std::int64_t m = m0; m < m1; ++m) {
        Acc acc[gemm_panel] = {};
        for (std::int64_t k = 0; k < K; ++k) {
          const Acc a = A[m * lda + k];
          const Acc* b = bt.data() + k * gemm_panel;
          for (std::int64_t j = 0; j < gemm_panel; ++j) acc[j] += a * b[j];
        }
        Acc* c = C + m * ldc + n0;
        for (std::int64_t j = 0; j < width; ++j) c[j] = (beta == Acc(0) ? Acc(0) : beta * c[j]) + acc[j];
      }
    });
  } else {  // nn and tn: row m of C is an axpy over the rows of B
    parallel_for(M, [&](std::int64_t m) {
      std::vector<Acc> acc(static_cast<std::size_t>(N), Acc(0));
      for (std::int64_t k = 0; k < K; ++k) {
        const Acc a = form == gemm_form::nn ? A[m * lda + k] : A[k * lda + m];
        const Acc* b = B + k * ldb;
        for (std::int64_t n = 0; n < N; ++n) acc[static_cast<std::size_t>(n)] += a * b[n];
      }
      Acc* c = C + m * ldc;
      start_row(c);
      for (std::int64_t n = 0; n < N; ++n) c[n] += acc[static_cast<std::size_t>(n)];
    });
  }
}

// C = beta C + op(A) op(B) (see the top of the file); C[M, N], K the summed dimension.
// `fixed_order`: the loops even where a CBLAS is in use (reduction::batch_invariant: a BLAS may sum
// a row of C otherwise when it sits elsewhere in a call, or in a call of another M).
template <class Acc>
void gemm(gemm_form form, std::int64_t M, std::int64_t N, std::int64_t K, const Acc* A, std::int64_t lda,
          const Acc* B, std::int64_t ldb, Acc beta, Acc* C, std::int64_t ldc, bool fixed_order = false) {
  if (M == 0 || N == 0) return;
#if defined(GRPOKIT_HAS_CBLAS)
  if (blas_in_use() && !fixed_order && K > 0) {
    blas_gemm(form == gemm_form::tn ? CblasTrans : CblasNoTrans, form == gemm_form::nt ? CblasTrans : CblasNoTrans, M,
              N, K, A, lda, B, ldb, beta, C, ldc);
    return;
  }
#else
  (void)fixed_order;
#endif
  loop_gemm(form, M, N, K, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace grpokit::detail
