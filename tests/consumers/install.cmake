# Installs circuitry's build tree into a fresh prefix, for the find_package consumer test.
#   cmake -DBUILD_DIR=<circuitry build tree> -DPREFIX=<prefix> [-DCONFIG=<config>] -P install.cmake
foreach(var IN ITEMS BUILD_DIR PREFIX)
  if(NOT ${var})
    message(FATAL_ERROR "install.cmake: set ${var}")
  endif()
endforeach()

file(REMOVE_RECURSE "${PREFIX}")  # no header left over from an earlier install
set(args --install "${BUILD_DIR}" --prefix "${PREFIX}")
if(CONFIG)
  list(APPEND args --config "${CONFIG}")
endif()
execute_process(COMMAND "${CMAKE_COMMAND}" ${args} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake ${args} failed with ${rc}")
endif()

file(GLOB_RECURSE configs "${PREFIX}/*/circuitryConfig.cmake")
if(NOT configs)
  message(FATAL_ERROR "no circuitryConfig.cmake installed under ${PREFIX}")
endif()
