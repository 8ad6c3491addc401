# Checks shared by the add_subdirectory and fetchcontent consumers: circuitry, added as a
# subproject, must add nothing but its library to the consumer's build.
function(circuitry_check_subproject circuitry_source_dir)
  if(NOT TARGET circuitry::circuitry)
    message(FATAL_ERROR "circuitry as a subproject defined no target circuitry::circuitry")
  endif()
  # Not top-level, so no tests, no examples, no install rules (PROJECT_IS_TOP_LEVEL is false).
  foreach(option IN ITEMS CIRCUITRY_BUILD_TESTS CIRCUITRY_BUILD_EXAMPLES CIRCUITRY_INSTALL)
    if(${option})
      message(FATAL_ERROR "${option} is ON in a subproject build; expected OFF")
    endif()
  endforeach()
  get_directory_property(subdirs DIRECTORY "${circuitry_source_dir}" SUBDIRECTORIES)
  if(subdirs)
    message(FATAL_ERROR "circuitry as a subproject added directories '${subdirs}'; expected none")
  endif()
  get_directory_property(targets DIRECTORY "${circuitry_source_dir}" BUILDSYSTEM_TARGETS)
  if(NOT targets STREQUAL "circuitry")
    message(FATAL_ERROR "circuitry as a subproject defined targets '${targets}'; "
                        "expected only 'circuitry'")
  endif()
  # include(CTest) is for the top-level project only: it would add BUILD_TESTING to our cache.
  if(DEFINED CACHE{BUILD_TESTING})
    message(FATAL_ERROR "circuitry as a subproject defined BUILD_TESTING (include(CTest))")
  endif()
endfunction()
