# Builds and runs examples/consumer as a separate project.
#   cmake -DMODE=fetch|find -DSOURCE_DIR=<grpokit checkout> -DWORK_DIR=<scratch> -DCXX=<compiler> -P run.cmake
# fetch: FetchContent, pointed at the checkout with FETCHCONTENT_SOURCE_DIR_GRPOKIT.
# find:  install grpokit into WORK_DIR/prefix first, then find_package.
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed: ${ARGN}\n${out}\n${err}")
  endif()
  message(STATUS "${out}")
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
set(consumer ${SOURCE_DIR}/examples/consumer)
if(MODE STREQUAL "fetch")
  set(how -DFETCHCONTENT_SOURCE_DIR_GRPOKIT=${SOURCE_DIR})
elseif(MODE STREQUAL "find")
  run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/grpokit-build -DCMAKE_CXX_COMPILER=${CXX}
      -DGRPOKIT_BUILD_TESTS=OFF -DGRPOKIT_BUILD_EXAMPLES=OFF -DGRPOKIT_ENABLE_CUDA=OFF
      -DCMAKE_INSTALL_PREFIX=${WORK_DIR}/prefix)
  run(${CMAKE_COMMAND} --install ${WORK_DIR}/grpokit-build)
  set(how -DGRPOKIT_CONSUMER_FIND_PACKAGE=ON -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix)
else()
  message(FATAL_ERROR "MODE must be fetch or find, got '${MODE}'")
endif()
run(${CMAKE_COMMAND} -S ${consumer} -B ${WORK_DIR}/consumer -DCMAKE_CXX_COMPILER=${CXX} ${how})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/consumer)
run(${WORK_DIR}/consumer/consumer)
