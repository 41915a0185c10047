# Runs the device test cases of one shard on the simulated GPU, each in its own process:
#   cmake -DRUN=<gpusim run> -DTEST=<test_device built for it> -DSHARD=<k> -DSHARDS=<n> -DCATCH_MAJOR=<2|3>
#         -P run_on_gpusim.cmake
# The cases are those of "[device]" but the ones the simulator cannot run: [linear] (cuBLAS needs a
# real driver) and [large] (more memory than a simulation can hold). Case i (in declaration order)
# belongs to shard i % n, so a new test case runs on the simulator without being listed anywhere.
foreach(var IN ITEMS RUN TEST SHARD SHARDS CATCH_MAJOR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_on_gpusim.cmake: -D${var}= is required")
  endif()
endforeach()
set(spec "[device]~[linear]~[large]")

# Catch2 v2 lists one name a line with --list-test-names-only (its exit status is the count); v3
# with --list-tests --verbosity quiet.
if(CATCH_MAJOR EQUAL 2)
  set(list_args --list-test-names-only)
else()
  set(list_args --list-tests --verbosity quiet)
endif()
execute_process(COMMAND "${TEST}" ${list_args} "${spec}" OUTPUT_VARIABLE listing ERROR_VARIABLE err)
string(REGEX REPLACE "[\r\n]+$" "" listing "${listing}")
string(REPLACE ";" "\\;" listing "${listing}")
string(REGEX REPLACE "[\r\n]+" ";" names "${listing}")
list(LENGTH names count)
if(count EQUAL 0)
  message(FATAL_ERROR "no device test cases listed by ${TEST}: ${err}")
endif()

set(failed "")
set(i 0)
foreach(name IN LISTS names)
  math(EXPR mine "${i} % ${SHARDS}")
  math(EXPR i "${i} + 1")
  if(NOT mine EQUAL SHARD)
    continue()
  endif()
  # a test spec: commas and brackets in a name are escaped, the name matched exactly
  string(REGEX REPLACE "([],[\\\\])" "\\\\\\1" escaped "${name}")
  string(TIMESTAMP t0 "%s")
  # --warn NoTests: a name that matches no case is a failure, not a silent pass
  execute_process(COMMAND "${RUN}" "${TEST}" --warn NoTests "${escaped}" RESULT_VARIABLE rc TIMEOUT 600)
  string(TIMESTAMP t1 "%s")
  math(EXPR seconds "${t1} - ${t0}")
  message(STATUS "[gpusim] ${name}: exit ${rc}, ${seconds} s")
  if(NOT rc EQUAL 0)
    list(APPEND failed "${name}")
  endif()
endforeach()
if(failed)
  string(REPLACE ";" "\n  " failed "${failed}")
  message(FATAL_ERROR "failed on the simulated GPU:\n  ${failed}")
endif()
