// The one doctest main of circuitry's unit tests; each header has its tests/test_<concept>.cpp.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
