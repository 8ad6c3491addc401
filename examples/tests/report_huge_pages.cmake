# ctest -R circuitry.report.huge_pages: circuitry-report re-executes itself with glibc's
# glibc.malloc.hugetlb=1 tunable (examples/huge_pages.hpp). Checks that this changes nothing but
# where memory comes from: the report on data (--tokens, --induction-tokens) is byte for byte the
# same with the re-exec and without it (GLIBC_TUNABLES=glibc.malloc.hugetlb=0, which the program
# leaves alone), and a usage error still reaches the user with exit code 2 and the usage text.
# Run with cmake -DREPORT=<circuitry-report> -DSOURCE_DIR=<project> -DWORK_DIR=<dir> -P <this>.
set(args ${SOURCE_DIR}/examples/models/attn-only-tiny.safetensors
    --tokens ${SOURCE_DIR}/examples/tokens/eval-batch-8x256.json
    --induction-tokens ${SOURCE_DIR}/examples/tokens/repeated-10x101.json)
file(MAKE_DIRECTORY ${WORK_DIR})
execute_process(COMMAND ${REPORT} ${args} --out ${WORK_DIR}/with.json RESULT_VARIABLE rc_with)
execute_process(COMMAND ${CMAKE_COMMAND} -E env GLIBC_TUNABLES=glibc.malloc.hugetlb=0
                        ${REPORT} ${args} --out ${WORK_DIR}/without.json
                RESULT_VARIABLE rc_without)
if(NOT rc_with EQUAL 0 OR NOT rc_without EQUAL 0)
  message(FATAL_ERROR "circuitry-report failed: exit ${rc_with} (huge pages), "
                      "${rc_without} (glibc.malloc.hugetlb=0)")
endif()
file(READ ${WORK_DIR}/with.json with)
file(READ ${WORK_DIR}/without.json without)
string(LENGTH "${with}" n)
if(n LESS 1000 OR NOT with STREQUAL without)
  message(FATAL_ERROR "the report differs with huge pages (${WORK_DIR}/with.json) and without "
                      "(${WORK_DIR}/without.json)")
endif()
execute_process(COMMAND ${REPORT} ${SOURCE_DIR}/examples/models/attn-only-tiny.safetensors
                        --precision half
                RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 2 OR NOT err MATCHES "usage: circuitry-report")
  message(FATAL_ERROR "a usage error after the re-exec: exit ${rc}, stderr: ${err}")
endif()
