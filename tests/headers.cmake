# Every public header compiles on its own (as CUB checks its headers): one translation unit per
# header that includes it twice (the include guard), built as part of `all` and by the CTest test
# `headers_self_contained`. C++ headers with the C++ compiler; the device headers (.cuh) with nvcc
# when CUDA is enabled.
file(GLOB_RECURSE grpokit_headers RELATIVE "${PROJECT_SOURCE_DIR}/include" CONFIGURE_DEPENDS
     "${PROJECT_SOURCE_DIR}/include/grpokit/*.hpp" "${PROJECT_SOURCE_DIR}/include/grpokit/*.cuh")
set(header_sources "")
set(device_header_sources "")
foreach(header IN LISTS grpokit_headers)
  string(MAKE_C_IDENTIFIER "${header}" id)
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
add_library(grpokit_header_check OBJECT ${header_sources} ${device_header_sources})
target_link_libraries(grpokit_header_check PRIVATE grpokit_dev)
if(device_header_sources)
  target_compile_options(grpokit_header_check PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra -Werror=all-warnings>)
endif()
add_test(NAME headers_self_contained
  COMMAND ${CMAKE_COMMAND} --build ${CMAKE_BINARY_DIR} --target grpokit_header_check)
set_tests_properties(headers_self_contained PROPERTIES LABELS compile)
