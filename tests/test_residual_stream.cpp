// residual_stream.hpp: the stream as a sum of named component contributions.
#include <doctest/doctest.h>

#include <circuitry/residual_stream.hpp>

#include "support/random_model.hpp"

using namespace circuitry;

TEST_CASE_TEMPLATE("the residual stream is the sum of its components", Scalar, float, double) {
  std::mt19937_64 rng(5);
  const Matrix<Scalar> embed = test::random_matrix<Scalar>(rng, 4, 6);
  const Matrix<Scalar> pos = test::random_matrix<Scalar>(rng, 4, 6);
  const Matrix<Scalar> head = test::random_matrix<Scalar>(rng, 4, 6);
  const RowVector<Scalar> bias = test::random_matrix<Scalar>(rng, 1, 6);
  ResidualStream<Scalar> r(4, 6);
  r.add(Component::embed(), embed);
  r.add(Component::pos_embed(), pos);
  r.add(Component::head_output({0, 2}), head);
  r.add(Component::attn_bias(0), bias);
  CHECK(r.size() == 4);
  const Matrix<Scalar> expected = embed + pos + head + bias.replicate(4, 1);
  CHECK(r.total().isApprox(expected));

  SUBCASE("a component can be read back by name") {
    CHECK(r[Component::head_output({0, 2})] == head);
    CHECK(r[Component::attn_bias(0)].row(3) == bias);
    CHECK(r.components()[2].name() == "L0H2");
    CHECK(r.components()[3].name() == "L0.b_O");
  }
  SUBCASE("ablating a component leaves it out of the sum") {
    CHECK(r.total_without({Component::head_output({0, 2})}).isApprox(expected - head));
    CHECK(r.sum_if([](const Component& c) { return c.kind == ComponentKind::head; }) == head);
  }
  SUBCASE("adding to a component already there sums into it") {
    r.add(Component::head_output({0, 2}), head);
    CHECK(r.size() == 4);
    CHECK(r[Component::head_output({0, 2})].isApprox(Scalar(2) * head));
  }
}

TEST_CASE("a contribution of the wrong shape or a missing component is a clear error") {
  ResidualStream<double> r(4, 6);
  CHECK_THROWS_WITH_AS(r.add(Component::embed(), Matrix<double>::Zero(3, 6)),
                       "[circuitry.shape_error] ResidualStream::add(embed): contribution is 3 x 6, "
                       "expected 4 x 6 or 1 x 6",
                       shape_error);
  CHECK_THROWS_WITH_AS(r[Component::head_output({1, 0})],
                       "[circuitry.argument_error] ResidualStream: no component 'L1H0'",
                       argument_error);
}
