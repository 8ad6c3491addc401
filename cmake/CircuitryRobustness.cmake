# Robustness builds (README, "Robustness"; .ci/run): sanitizers for circuitry's own tests and
# fuzzers, and the libFuzzer fuzzers of tests/fuzz. Included by the top-level CMakeLists.txt.
# Like the warnings, these flags go on circuitry's own targets only (PRIVATE), never on the
# circuitry::circuitry interface target nor on a consumer.
#
#   CIRCUITRY_SANITIZE   e.g. "address,undefined": -fsanitize=<list> on the tests and fuzzers,
#                        errors fatal (-fno-sanitize-recover=all), frame pointers kept.
#   CIRCUITRY_FUZZ       build tests/fuzz (needs clang's -fsanitize=fuzzer) and add one CTest
#                        entry per fuzzer, label "fuzz", that runs it for CIRCUITRY_FUZZ_SECONDS.

set(CIRCUITRY_SANITIZER_FLAGS "")
if(CIRCUITRY_SANITIZE)
  if(MSVC)
    message(FATAL_ERROR "CIRCUITRY_SANITIZE: only gcc and clang are supported")
  endif()
  set(CIRCUITRY_SANITIZER_FLAGS
      -fsanitize=${CIRCUITRY_SANITIZE} -fno-sanitize-recover=all -fno-omit-frame-pointer)
endif()

# circuitry_sanitize(target): compiles and links `target` with CIRCUITRY_SANITIZER_FLAGS.
function(circuitry_sanitize target)
  if(CIRCUITRY_SANITIZER_FLAGS)
    target_compile_options(${target} PRIVATE ${CIRCUITRY_SANITIZER_FLAGS})
    target_link_options(${target} PRIVATE ${CIRCUITRY_SANITIZER_FLAGS})
  endif()
endfunction()

if(CIRCUITRY_FUZZ AND NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "CIRCUITRY_FUZZ needs clang (libFuzzer, -fsanitize=fuzzer); this build "
                      "uses ${CMAKE_CXX_COMPILER_ID}: configure with -DCMAKE_CXX_COMPILER=clang++")
endif()
