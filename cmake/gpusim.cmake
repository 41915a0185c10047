# GRPOKIT_GPUSIM=ON: programs built with the simulated GPU's nvcc (../shared/tools/gpusim: CUDA 11.8,
# compute_70 PTX, the CUDA runtime as a shared library) and run on that simulator, for machines
# without a GPU (CI). This is a build of this repository's own tests only; users' builds do not
# change. Setup first: ${GRPOKIT_GPUSIM_DIR}/setup.
set(GRPOKIT_GPUSIM_DIR "${PROJECT_SOURCE_DIR}/../shared/tools/gpusim" CACHE PATH
    "The simulated GPU's tools (nvcc, run, setup)")
get_filename_component(GRPOKIT_GPUSIM_DIR "${GRPOKIT_GPUSIM_DIR}" ABSOLUTE)
foreach(tool IN ITEMS nvcc run)
  if(NOT EXISTS "${GRPOKIT_GPUSIM_DIR}/${tool}")
    message(FATAL_ERROR "GRPOKIT_GPUSIM=ON: no ${GRPOKIT_GPUSIM_DIR}/${tool}; set GRPOKIT_GPUSIM_DIR to the simulator's tools")
  endif()
endforeach()
set(GRPOKIT_GPUSIM_HOME "$ENV{GPUSIM_HOME}")
if(GRPOKIT_GPUSIM_HOME STREQUAL "")
  set(GRPOKIT_GPUSIM_HOME /opt/gpusim)
endif()
if(NOT EXISTS "${GRPOKIT_GPUSIM_HOME}/lib/libcudart.so")
  message(FATAL_ERROR "GRPOKIT_GPUSIM=ON: the simulator is not installed in ${GRPOKIT_GPUSIM_HOME}; run ${GRPOKIT_GPUSIM_DIR}/setup")
endif()
set(GRPOKIT_GPUSIM_NVCC "${GRPOKIT_GPUSIM_DIR}/nvcc")
set(GRPOKIT_GPUSIM_RUN "${GRPOKIT_GPUSIM_DIR}/run")
message(STATUS "grpokit: simulated-GPU programs built with ${GRPOKIT_GPUSIM_NVCC}")

# grpokit_gpusim_executable(<name> SOURCES ... [INCLUDES ...] [DEFINES ...] [LIBS ...] [DEPENDS ...]
#                           [NO_WORKAROUNDS])
# Builds ${CMAKE_CURRENT_BINARY_DIR}/<name> with the simulator's nvcc (target <name>_build, part of
# `all`), rebuilt when a source, a grpokit header or a DEPENDS file changes. The path is in
# <name>_PATH (parent scope). Every source gets gpusim_workarounds.h (the simulator's known bugs)
# unless NO_WORKAROUNDS.
function(grpokit_gpusim_executable name)
  cmake_parse_arguments(PARSE_ARGV 1 ARG "NO_WORKAROUNDS" "" "SOURCES;INCLUDES;DEFINES;LIBS;DEPENDS")
  set(out "${CMAKE_CURRENT_BINARY_DIR}/${name}")
  file(GLOB_RECURSE headers CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/include/grpokit/*")
  set(flags -std=c++17 --expt-relaxed-constexpr -O2 -Xcompiler=-Wall,-Wextra -Werror=all-warnings
            "-I${PROJECT_SOURCE_DIR}/include")
  set(workarounds "${PROJECT_SOURCE_DIR}/cmake/gpusim_workarounds.h")
  if(NOT ARG_NO_WORKAROUNDS)
    list(APPEND flags -include "${workarounds}")
  endif()
  foreach(dir IN LISTS ARG_INCLUDES)
    list(APPEND flags "-I${dir}")
  endforeach()
  foreach(def IN LISTS ARG_DEFINES)
    list(APPEND flags "-D${def}")
  endforeach()
  add_custom_command(OUTPUT "${out}"
    COMMAND "${GRPOKIT_GPUSIM_NVCC}" ${flags} ${ARG_SOURCES} ${ARG_LIBS} -o "${out}"
    DEPENDS ${ARG_SOURCES} ${headers} ${ARG_DEPENDS} "${workarounds}"
    WORKING_DIRECTORY "${CMAKE_CURRENT_SOURCE_DIR}"
    COMMENT "Building ${name} for the simulated GPU"
    COMMAND_EXPAND_LISTS VERBATIM)
  add_custom_target(${name}_build ALL DEPENDS "${out}")
  set(${name}_PATH "${out}" PARENT_SCOPE)
endfunction()
