# Builds and runs the consumer twice: against an installed grpokit (find_package) and with
# FetchContent from the source tree.
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed: ${ARGN}\n${out}\n${err}")
  endif()
  message(STATUS "${out}")
endfunction()
file(REMOVE_RECURSE ${WORK_DIR})
set(consumer ${SOURCE_DIR}/tests/package)
# 1. install, then find_package
run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/grpokit-build -DCMAKE_CXX_COMPILER=${CXX}
    -DGRPOKIT_BUILD_TESTS=OFF -DGRPOKIT_BUILD_EXAMPLES=OFF -DGRPOKIT_ENABLE_CUDA=OFF
    -DCMAKE_INSTALL_PREFIX=${WORK_DIR}/prefix)
run(${CMAKE_COMMAND} --install ${WORK_DIR}/grpokit-build)
run(${CMAKE_COMMAND} -S ${consumer} -B ${WORK_DIR}/find -DCMAKE_CXX_COMPILER=${CXX}
    -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/find)
run(${WORK_DIR}/find/consumer)
# 2. FetchContent
run(${CMAKE_COMMAND} -S ${consumer} -B ${WORK_DIR}/fetch -DCMAKE_CXX_COMPILER=${CXX} -DUSE_FETCHCONTENT=ON
    -DFETCHCONTENT_SOURCE_DIR_GRPOKIT=${SOURCE_DIR})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/fetch)
run(${WORK_DIR}/fetch/consumer)
