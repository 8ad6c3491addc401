// error.hpp: every exception carries a stable id, what() = "[id] message", and the message
// alone for a caller that adds context and throws again.
#include <doctest/doctest.h>

#include <circuitry/error.hpp>
#include <string>

using namespace circuitry;

namespace {
template <typename E>
void check_error(const std::string& id) {
  const E e("tensor 'embed.W_E': expected [40, 16]");
  CHECK(e.id() == id);
  CHECK(e.message() == "tensor 'embed.W_E': expected [40, 16]");
  CHECK(std::string(e.what()) == "[" + id + "] tensor 'embed.W_E': expected [40, 16]");
  const circuitry::error& base = e;  // catchable as circuitry::error and std::runtime_error
  CHECK(base.id() == id);
  CHECK(std::string(static_cast<const std::runtime_error&>(e).what()) == e.what());
}
}  // namespace

TEST_CASE("each error kind has its id, a what() of [id] message, and the message alone") {
  check_error<io_error>("circuitry.io_error");
  check_error<format_error>("circuitry.format_error");
  check_error<shape_error>("circuitry.shape_error");
  check_error<config_error>("circuitry.config_error");
  check_error<argument_error>("circuitry.argument_error");
  check_error<numerical_error>("circuitry.numerical_error");
}

TEST_CASE("an error thrown again with context keeps one id prefix") {
  const auto read = [] {
    try {
      throw argument_error("tokens: empty batch (no sequences)");
    } catch (const argument_error& e) {
      throw argument_error("token file 'x.json': " + e.message());
    }
  };
  CHECK_THROWS_WITH_AS(
      read(), "[circuitry.argument_error] token file 'x.json': tokens: empty batch (no sequences)",
      argument_error);
}
