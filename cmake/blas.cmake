# A CBLAS for the host fused_linear_loss's GEMMs (include/grpokit/host/detail/gemm.hpp): OpenBLAS,
# else BLIS (FLAME), else Apple's Accelerate, each with a cblas.h beside it; a BLA_VENDOR the user
# sets is taken as given (MKL: set MKL_CBWR for run-to-run reproducibility). Not any BLAS: the
# single-threaded reference BLAS is slower than grpokit's own loops. Found: grpokit::grpokit links
# it and defines GRPOKIT_HAS_CBLAS; not found: the header's own loops. The resolved library paths
# are linked (not BLAS::BLAS), so the installed package needs no find_dependency.
include(CheckCXXSourceCompiles)
include(CMakePushCheckState)
set(GRPOKIT_CBLAS_FOUND OFF)
if(DEFINED BLA_VENDOR)
  find_package(BLAS QUIET)
else()
  foreach(vendor IN ITEMS OpenBLAS FLAME Apple)
    set(BLA_VENDOR ${vendor})
    find_package(BLAS QUIET)
    unset(BLA_VENDOR)
    if(BLAS_FOUND)
      break()
    endif()
  endforeach()
endif()
if(BLAS_FOUND)
  find_path(GRPOKIT_CBLAS_INCLUDE_DIR cblas.h
    PATH_SUFFIXES openblas openblas-pthread x86_64-linux-gnu/openblas-pthread x86_64-linux-gnu)
  if(GRPOKIT_CBLAS_INCLUDE_DIR)
    cmake_push_check_state(RESET)
    set(CMAKE_REQUIRED_INCLUDES ${GRPOKIT_CBLAS_INCLUDE_DIR})
    set(CMAKE_REQUIRED_LIBRARIES ${BLAS_LIBRARIES})
    set(CMAKE_REQUIRED_QUIET ON)
    check_cxx_source_compiles("
      #include <cblas.h>
      int main() { float a = 1, b = 1, c = 0; cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 1, 1, 1, 1.f, &a, 1, &b, 1, 0.f, &c, 1); return c == 1 ? 0 : 1; }"
      GRPOKIT_CBLAS_LINKS)
    cmake_pop_check_state()
    if(GRPOKIT_CBLAS_LINKS)
      set(GRPOKIT_CBLAS_FOUND ON)
    endif()
  endif()
endif()
if(GRPOKIT_CBLAS_FOUND)
  message(STATUS "grpokit: host GEMMs by the CBLAS in ${BLAS_LIBRARIES} (cblas.h in ${GRPOKIT_CBLAS_INCLUDE_DIR})")
  target_link_libraries(grpokit INTERFACE ${BLAS_LIBRARIES})
  target_include_directories(grpokit SYSTEM INTERFACE ${GRPOKIT_CBLAS_INCLUDE_DIR})
  target_compile_definitions(grpokit INTERFACE GRPOKIT_HAS_CBLAS=1)
else()
  message(STATUS "grpokit: no CBLAS found: the host GEMMs are grpokit's loops (apt-get install libopenblas-dev)")
endif()
