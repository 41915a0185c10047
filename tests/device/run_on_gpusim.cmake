# Runs the device test cases of one shard on the simulated GPU, in one simulator process:
#   cmake -DRUN=<gpusim run> -DTEST=<test_device built for it> -DSHARD=<k> -DSHARDS=<n> -DCATCH_MAJOR=<2|3>
#         -P run_on_gpusim.cmake
# The cases are those of "[device]" but the ones the simulator cannot run: [linear] (cuBLAS needs a
# real driver) and [large] (more memory than a simulation can hold). One process per shard: the
# simulator spends about 12 s starting (it parses every kernel of the binary), more than most cases
# take. The cases tagged [slow] (minutes on the simulator) are dealt out first, then the others, in
# declaration order, case i to shard i % n: the shards stay near even, and a new test case runs on
# the simulator without being listed anywhere.
foreach(var IN ITEMS RUN TEST SHARD SHARDS CATCH_MAJOR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_on_gpusim.cmake: -D${var}= is required")
  endif()
endforeach()

# Catch2 v2 lists one name a line with --list-test-names-only; v3 with --list-tests --verbosity quiet.
if(CATCH_MAJOR EQUAL 2)
  set(list_args --list-test-names-only)
else()
  set(list_args --list-tests --verbosity quiet)
endif()
macro(list_cases)  # the cases `query` selects, as the list `cases` (a ';' in a name escaped)
  execute_process(COMMAND "${TEST}" ${list_args} "${query}" OUTPUT_VARIABLE listing ERROR_VARIABLE err)
  string(REGEX REPLACE "[\r\n]+$" "" listing "${listing}")
  string(REPLACE ";" "\\;" listing "${listing}")
  string(REGEX REPLACE "[\r\n]+" ";" cases "${listing}")
endmacro()

set(i 0)
set(shard_spec "")
set(count 0)
set(listed "")
foreach(query IN ITEMS "[device][slow]~[linear]~[large]" "[device]~[slow]~[linear]~[large]")
  list_cases()
  foreach(name IN LISTS cases)
    math(EXPR mine "${i} % ${SHARDS}")
    math(EXPR i "${i} + 1")
    if(mine EQUAL SHARD)
      # a test spec: commas and brackets in a name are escaped, the name matched exactly
      string(REGEX REPLACE "([],[\\\\])" "\\\\\\1" escaped "${name}")
      if(shard_spec STREQUAL "")
        set(shard_spec "${escaped}")
      else()
        string(APPEND shard_spec ",${escaped}")
      endif()
      math(EXPR count "${count} + 1")
      string(APPEND listed "\n  ${name}")
    endif()
  endforeach()
endforeach()
if(i EQUAL 0)
  message(FATAL_ERROR "no device test cases listed by ${TEST}: ${err}")
endif()
if(count EQUAL 0)
  message(STATUS "[gpusim] shard ${SHARD} of ${SHARDS}: no cases")
  return()
endif()

# The joined spec must select exactly this shard's cases: a name that matches nothing, or more
# than itself, is a failure, not a silent pass.
set(query "${shard_spec}")
list_cases()
list(LENGTH cases selected)
if(NOT selected EQUAL count)
  message(FATAL_ERROR "shard ${SHARD}: the spec selects ${selected} cases, not ${count}:\n${shard_spec}")
endif()
message(STATUS "[gpusim] shard ${SHARD} of ${SHARDS}, ${count} cases:${listed}")
execute_process(COMMAND "${RUN}" "${TEST}" --durations yes "${shard_spec}" RESULT_VARIABLE rc TIMEOUT 1100)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "shard ${SHARD}: failed on the simulated GPU (exit ${rc})")
endif()
