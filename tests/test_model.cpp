// model.hpp: a layer's heads side by side. W_V_stacked() and W_O_stacked() hold each head's
// value and output matrices in head order (TransformerLens's W_V[l], W_O[l] flattened over
// heads), so that one product with them is the sum of the heads' OV circuits.
#include <doctest/doctest.h>

#include <circuitry/model.hpp>
#include <random>

#include "support/random_model.hpp"

using namespace circuitry;

TEST_CASE_TEMPLATE("a layer's stacked W_V and W_O hold each head's matrices in head order", Scalar,
                   float, double) {
  test::RandomModelSpec spec;
  spec.n_heads = 4;
  const auto model = test::random_model<Scalar>(spec);
  for (const AttentionLayer<Scalar>& layer : model.layers) {
    const Matrix<Scalar> V = layer.W_V_stacked(), O = layer.W_O_stacked();
    REQUIRE(V.rows() == spec.d_model);
    REQUIRE(V.cols() == spec.n_heads * spec.d_head);
    REQUIRE(O.rows() == spec.n_heads * spec.d_head);
    REQUIRE(O.cols() == spec.d_model);
    for (int h = 0; h < spec.n_heads; ++h) {
      CAPTURE(h);
      const AttentionHead<Scalar>& hd = layer.heads[static_cast<std::size_t>(h)];
      CHECK(V.middleCols(h * spec.d_head, spec.d_head) == hd.W_V);
      CHECK(O.middleRows(h * spec.d_head, spec.d_head) == hd.W_O);
    }
  }
}

TEST_CASE("one product with the stacked weights is the sum of the heads' OV circuits") {
  test::RandomModelSpec spec;
  spec.n_heads = 5;
  const auto model = test::random_model<double>(spec);
  std::mt19937_64 rng(7);
  const Matrix<double> x = test::random_matrix<double>(rng, 6, spec.d_model);
  for (const AttentionLayer<double>& layer : model.layers) {
    Matrix<double> sum = Matrix<double>::Zero(6, spec.d_model);
    for (const AttentionHead<double>& hd : layer.heads) sum += (x * hd.W_V) * hd.W_O;
    const Matrix<double> stacked = (x * layer.W_V_stacked()) * layer.W_O_stacked();
    CHECK((stacked - sum).cwiseAbs().maxCoeff() < 1e-12 * (1 + sum.cwiseAbs().maxCoeff()));
  }
}

TEST_CASE("heads of different OV widths stack at their own offsets; no heads stack to nothing") {
  std::mt19937_64 rng(3);
  const Index d_model = 7;
  AttentionLayer<double> layer;
  for (Index width : {1, 3, 2}) {
    AttentionHead<double> hd;
    hd.W_V = test::random_matrix<double>(rng, d_model, width);
    hd.W_O = test::random_matrix<double>(rng, width, d_model);
    layer.heads.push_back(hd);
  }
  const Matrix<double> V = layer.W_V_stacked(), O = layer.W_O_stacked();
  REQUIRE(V.rows() == d_model);
  REQUIRE(V.cols() == 6);
  REQUIRE(O.rows() == 6);
  REQUIRE(O.cols() == d_model);
  CHECK(V.col(0) == layer.heads[0].W_V);
  CHECK(V.middleCols(1, 3) == layer.heads[1].W_V);
  CHECK(V.middleCols(4, 2) == layer.heads[2].W_V);
  CHECK(O.row(0) == layer.heads[0].W_O);
  CHECK(O.middleRows(1, 3) == layer.heads[1].W_O);
  CHECK(O.middleRows(4, 2) == layer.heads[2].W_O);

  const AttentionLayer<double> empty;
  CHECK(empty.W_V_stacked().size() == 0);
  CHECK(empty.W_O_stacked().size() == 0);
}
