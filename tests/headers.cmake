# Every public header compiles on its own (as CUB checks its headers): one translation unit per
# header that includes it twice (the include guard), built as part of `all` and by the CTest test
# `headers_self_contained`. The translation units are linked into one shared library, so that a
# header that defines a symbol in every unit including it (a kernel that is not a template, a
# function that is not inline) fails to link here rather than in a user's program. C++ headers with the C++ compiler; the device headers (.cuh) with nvcc
# when CUDA is enabled. The communicator adapters need their runtime's header: comm/mpi.hpp is
# checked when MPI is found, comm/nccl.cuh when CUDA and nccl.h are.
file(GLOB_RECURSE grpokit_headers RELATIVE "${PROJECT_SOURCE_DIR}/include" CONFIGURE_DEPENDS
     "${PROJECT_SOURCE_DIR}/include/grpokit/*.hpp" "${PROJECT_SOURCE_DIR}/include/grpokit/*.cuh")
set(header_sources "")
set(device_header_sources "")
foreach(header IN LISTS grpokit_headers)
  string(MAKE_C_IDENTIFIER "${header}" id)
  if(header STREQUAL "grpokit/comm/mpi.hpp" OR header STREQUAL "grpokit/comm/nccl.cuh")
    continue()
  endif()
  if(header MATCHES "\\.cuh$")
    if(NOT GRPOKIT_HAS_CUDA)
      continue()
    endif()
    set(source "${CMAKE_CURRENT_BINARY_DIR}/headers/${id}.cu")
    list(APPEND device_header_sources "${source}")
  else()
    set(source "${CMAKE_CURRENT_BINARY_DIR}/headers/${id}.cpp")
    list(APPEND header_sources "${source}")
  endif()
  file(CONFIGURE OUTPUT "${source}" CONTENT "#include <${header}>\n#include <${header}>\n")
endforeach()
add_library(grpokit_header_check SHARED ${header_sources} ${device_header_sources})
target_link_libraries(grpokit_header_check PRIVATE grpokit_dev)
if(device_header_sources)
  target_compile_options(grpokit_header_check PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra -Werror=all-warnings>)
endif()
set(header_check_targets grpokit_header_check)
if(MPI_CXX_FOUND)
  file(CONFIGURE OUTPUT "${CMAKE_CURRENT_BINARY_DIR}/headers/comm_mpi.cpp"
       CONTENT "#include <grpokit/comm/mpi.hpp>\n#include <grpokit/comm/mpi.hpp>\n")
  add_library(grpokit_header_check_mpi OBJECT "${CMAKE_CURRENT_BINARY_DIR}/headers/comm_mpi.cpp")
  target_link_libraries(grpokit_header_check_mpi PRIVATE grpokit_dev MPI::MPI_CXX)
  list(APPEND header_check_targets grpokit_header_check_mpi)
endif()
if(GRPOKIT_HAS_CUDA)
  find_path(GRPOKIT_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include)
  if(GRPOKIT_NCCL_INCLUDE_DIR)
    file(CONFIGURE OUTPUT "${CMAKE_CURRENT_BINARY_DIR}/headers/comm_nccl.cu"
         CONTENT "#include <grpokit/comm/nccl.cuh>\n#include <grpokit/comm/nccl.cuh>\n")
    add_library(grpokit_header_check_nccl OBJECT "${CMAKE_CURRENT_BINARY_DIR}/headers/comm_nccl.cu")
    target_link_libraries(grpokit_header_check_nccl PRIVATE grpokit_dev)
    target_include_directories(grpokit_header_check_nccl PRIVATE ${GRPOKIT_NCCL_INCLUDE_DIR})
    target_compile_options(grpokit_header_check_nccl PRIVATE -Xcompiler=-Wall,-Wextra -Werror=all-warnings)
    list(APPEND header_check_targets grpokit_header_check_nccl)
  endif()
endif()
add_test(NAME headers_self_contained
  COMMAND ${CMAKE_COMMAND} --build ${CMAKE_BINARY_DIR} --target ${header_check_targets})
set_tests_properties(headers_self_contained PROPERTIES LABELS compile)
