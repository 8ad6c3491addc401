// Tests of circuitry/processing.hpp: each of TransformerLens's weight-processing steps leaves
// the function it claims to leave unchanged, checked with dense computations written here (not
// the library's forward pass or LayerNorm); the processed models carry the invariants the steps
// promise; and the processed weights give TransformerLens's reference figures.
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <type_traits>

#include "circuitry/model_io.hpp"
#include "circuitry/processing.hpp"

using circuitry::AttentionOnlyModel;
using circuitry::Index;
using circuitry::Matrix;
using circuitry::NormalizationType;
using circuitry::Vector;
using nlohmann::json;

namespace {

const char* const model_names[] = {"attn-only-tiny", "attn-only-1l", "attn-only-2l"};

template <typename T>
AttentionOnlyModel<T> load(const std::string& name) {
  return circuitry::load_model<T>(CIRCUITRY_MODELS_DIR "/" + name + ".safetensors");
}

json reference(const std::string& name) {
  std::ifstream in(CIRCUITRY_TEST_DATA_DIR "/reference/" + name + ".json");
  REQUIRE(in);
  return json::parse(in);
}

/// Rounding tolerance of a computation in T, relative to the size of its result.
template <typename T>
double tolerance() {
  return std::is_same<T, float>::value ? 1e-4 : 1e-10;
}

/// max |a - b| / (1 + max |b|): zero up to rounding when a and b agree.
template <typename T>
double rel_diff(const Matrix<T>& a, const Matrix<T>& b) {
  REQUIRE((a.rows() == b.rows() && a.cols() == b.cols()));
  return static_cast<double>((a - b).cwiseAbs().maxCoeff()) /
         (1.0 + static_cast<double>(b.cwiseAbs().maxCoeff()));
}

/// A rows x cols matrix of standard normal entries, the same for float and double.
template <typename T>
Matrix<T> random_matrix(Index rows, Index cols, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> normal;
  Matrix<double> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = normal(gen);
  return m.cast<T>();
}

/// Row-wise (r - mean r) / sqrt(mean((r - mean r)^2) + eps): TransformerLens's LNPre.
template <typename T>
Matrix<T> ln_pre(const Matrix<T>& r, double eps) {
  Matrix<T> x = r;
  for (Index i = 0; i < x.rows(); ++i) {
    const T mean = x.row(i).sum() / T(x.cols());
    x.row(i).array() -= mean;
    const T var = x.row(i).squaredNorm() / T(x.cols());
    x.row(i) /= std::sqrt(var + T(eps));
  }
  return x;
}

/// TransformerLens's LN: LNPre(r) * w + b, row-wise.
template <typename T>
Matrix<T> ln(const Matrix<T>& r, const Vector<T>& w, const Vector<T>& b, double eps) {
  Matrix<T> x = ln_pre(r, eps) * w.asDiagonal();
  x.rowwise() += b.transpose();
  return x;
}

/// x W + 1 b^T.
template <typename T>
Matrix<T> affine(const Matrix<T>& x, const Matrix<T>& W, const Vector<T>& b) {
  Matrix<T> y = x * W;
  y.rowwise() += b.transpose();
  return y;
}

template <typename T>
Matrix<T> log_softmax(const Matrix<T>& logits) {
  Matrix<T> out = logits;
  for (Index i = 0; i < out.rows(); ++i) {
    const T m = out.row(i).maxCoeff();
    const T lse = m + std::log((out.row(i).array() - m).exp().sum());
    out.row(i).array() -= lse;
  }
  return out;
}

/// max over rows of |row mean|.
template <typename Derived>
double max_abs_row_mean(const Eigen::MatrixBase<Derived>& m) {
  return static_cast<double>(m.rowwise().mean().cwiseAbs().maxCoeff());
}

/// max over rows of (max - min) of the row: zero when each row is a constant.
template <typename T>
double max_row_spread(const Matrix<T>& m) {
  return static_cast<double>((m.rowwise().maxCoeff() - m.rowwise().minCoeff()).maxCoeff());
}

}  // namespace

TEST_CASE_TEMPLATE("fold_layer_norm leaves every query, key, value and logit unchanged", T, float,
                   double) {
  for (const char* name : model_names) {
    CAPTURE(name);
    const AttentionOnlyModel<T> raw = load<T>(name);
    AttentionOnlyModel<T> folded = raw;
    bool center = true;
    SUBCASE("centring the reading weights") {}
    SUBCASE("without centring") { center = false; }
    CAPTURE(center);
    circuitry::fold_layer_norm(folded, center);
    CHECK(folded.config.normalization_type == NormalizationType::LNPre);
    CHECK(folded.processing.fold_ln);
    CHECK(!folded.processing.center_writing_weights);

    const double eps = raw.config.eps;
    const Matrix<T> r = random_matrix<T>(12, raw.config.d_model, 1) * T(3);
    const double tol = tolerance<T>();
    for (const auto& id : raw.head_ids()) {
      CAPTURE(id.name());
      const auto& ln1 = raw.layers[static_cast<std::size_t>(id.layer)].ln1;
      const Matrix<T> x = ln(r, ln1.w, ln1.b, eps);
      const Matrix<T> x_pre = ln_pre(r, eps);
      const auto& a = raw.head(id);
      const auto& b = folded.head(id);
      CHECK(rel_diff(affine(x_pre, b.W_Q, b.b_Q), affine(x, a.W_Q, a.b_Q)) < tol);
      CHECK(rel_diff(affine(x_pre, b.W_K, b.b_K), affine(x, a.W_K, a.b_K)) < tol);
      CHECK(rel_diff(affine(x_pre, b.W_V, b.b_V), affine(x, a.W_V, a.b_V)) < tol);
      CHECK((b.W_O.array() == a.W_O.array()).all());  // W_O writes: not folded
      if (center) {  // each column of a reading matrix sums to zero over d_model
        CHECK(max_abs_row_mean(b.W_Q.transpose()) < tol);
        CHECK(max_abs_row_mean(b.W_V.transpose()) < tol);
      }
    }
    const Matrix<T> logits_raw =
        affine(ln(r, raw.ln_final.w, raw.ln_final.b, eps), raw.W_U, raw.b_U);
    const Matrix<T> logits = affine(ln_pre(r, eps), folded.W_U, folded.b_U);
    CHECK(rel_diff(logits, logits_raw) < tol);
  }
}

TEST_CASE_TEMPLATE(
    "center_writing_weights moves each written vector along the all-ones "
    "direction, which LNPre ignores",
    T, float, double) {
  AttentionOnlyModel<T> before = load<T>("attn-only-2l");
  circuitry::fold_layer_norm(before);
  AttentionOnlyModel<T> after = before;
  circuitry::center_writing_weights(after);
  CHECK(after.processing.center_writing_weights);
  const double tol = tolerance<T>();
  const double eps = before.config.eps;

  SUBCASE("LNPre(r + c 1^T) = LNPre(r)") {
    const Matrix<T> r = random_matrix<T>(10, before.config.d_model, 2);
    const Matrix<T> c = random_matrix<T>(10, 1, 3) * T(5);
    const Matrix<T> shifted = r + c * Matrix<T>::Ones(1, r.cols());
    CHECK(rel_diff(ln_pre(shifted, eps), ln_pre(r, eps)) < tol);
  }
  SUBCASE("the change to each row of W_E, W_pos and W_O is a constant, after which it has mean 0") {
    CHECK(max_row_spread<T>(after.W_E - before.W_E) < tol);
    CHECK(max_row_spread<T>(after.W_pos - before.W_pos) < tol);
    CHECK(max_abs_row_mean(after.W_E) < tol);
    for (const auto& id : before.head_ids()) {
      CAPTURE(id.name());
      CHECK(max_row_spread<T>(after.head(id).W_O - before.head(id).W_O) < tol);
      CHECK(max_abs_row_mean(after.head(id).W_O) < tol);
    }
  }
  SUBCASE("the stream LNPre reads is unchanged: W_E[t] + W_pos[p] + sum_h v_h W_O^h + b_O") {
    const int n = 16;
    const Matrix<T> v = random_matrix<T>(n, before.config.d_head, 4);
    auto stream = [&](const AttentionOnlyModel<T>& m) {
      Matrix<T> s(n, m.config.d_model);
      for (int i = 0; i < n; ++i) {
        s.row(i) = m.W_E.row(37 * i + 5) + m.W_pos.row(i);  // any tokens and positions
      }
      for (const auto& layer : m.layers) {
        for (const auto& head : layer.heads) s += v * head.W_O;
        s.rowwise() += layer.b_O.transpose();
      }
      return s;
    };
    CHECK(rel_diff(ln_pre(stream(after), eps), ln_pre(stream(before), eps)) < tol);
  }
}

TEST_CASE_TEMPLATE(
    "center_unembed shifts each row of logits by a constant, leaving log_softmax "
    "unchanged",
    T, float, double) {
  const AttentionOnlyModel<T> raw = load<T>("attn-only-2l");
  AttentionOnlyModel<T> centred = raw;
  circuitry::center_unembed(centred);
  CHECK(centred.processing.center_unembed);
  REQUIRE(std::abs(static_cast<double>(raw.b_U.mean())) > 0);  // there is something to centre
  const Matrix<T> x = random_matrix<T>(8, raw.config.d_model, 5);
  const Matrix<T> before = affine(x, raw.W_U, raw.b_U);
  const Matrix<T> after = affine(x, centred.W_U, centred.b_U);
  const double tol = tolerance<T>();
  CHECK(max_row_spread<T>(after - before) < tol * (1 + before.cwiseAbs().maxCoeff()));
  CHECK(rel_diff(log_softmax(after), log_softmax(before)) < tol);
  CHECK(max_abs_row_mean(centred.W_U) < tol);
}

TEST_CASE_TEMPLATE("fold_value_biases moves b_V into b_O through patterns whose rows sum to one", T,
                   float, double) {
  const AttentionOnlyModel<T> raw = load<T>("attn-only-2l");
  AttentionOnlyModel<T> folded = raw;
  circuitry::fold_value_biases(folded);
  CHECK(folded.processing.fold_value_biases);
  const int n = 9;
  const double tol = tolerance<T>();
  // A causal pattern: positive weights on keys <= query, each row normalised to sum 1.
  Matrix<T> P =
      random_matrix<T>(n, n, 6).array().exp().matrix().template triangularView<Eigen::Lower>();
  const Vector<T> row_sums = P.rowwise().sum();
  P = row_sums.cwiseInverse().asDiagonal() * P;
  REQUIRE((P.rowwise().sum().array() - T(1)).abs().maxCoeff() < tol);
  for (int l = 0; l < raw.n_layers(); ++l) {
    CAPTURE(l);
    const auto& a = raw.layers[static_cast<std::size_t>(l)];
    const auto& b = folded.layers[static_cast<std::size_t>(l)];
    const Matrix<T> x = random_matrix<T>(n, raw.config.d_model, 7 + unsigned(l));
    Matrix<T> out_raw = Matrix<T>::Zero(n, raw.config.d_model);
    Matrix<T> out_folded = out_raw;
    for (std::size_t h = 0; h < a.heads.size(); ++h) {
      REQUIRE(!a.heads[h].b_V.isZero(0));
      out_raw += P * affine(x, a.heads[h].W_V, a.heads[h].b_V) * a.heads[h].W_O;
      out_folded += P * affine(x, b.heads[h].W_V, b.heads[h].b_V) * b.heads[h].W_O;
      CHECK(b.heads[h].b_V.isZero(0));
    }
    out_raw.rowwise() += a.b_O.transpose();
    out_folded.rowwise() += b.b_O.transpose();
    CHECK(rel_diff(out_folded, out_raw) < tol);
  }
}

TEST_CASE_TEMPLATE("process_weights on attn-only-2l applies every step and its invariants", T,
                   float, double) {
  const AttentionOnlyModel<T> m = circuitry::processed(load<T>("attn-only-2l"));
  const double zero = std::is_same<T, float>::value ? 1e-6 : 1e-12;
  const auto& p = m.processing;
  CHECK((p.fold_ln && p.center_writing_weights && p.center_unembed && p.fold_value_biases));
  CHECK(m.config.normalization_type == NormalizationType::LNPre);
  CHECK(m.ln_final.type == NormalizationType::LNPre);
  CHECK((m.ln_final.w.size() == 0 && m.ln_final.b.size() == 0));
  CHECK_NOTHROW(m.check_shapes());
  CHECK(max_abs_row_mean(m.W_E) < zero);
  CHECK(max_abs_row_mean(m.W_pos) < zero);
  CHECK(max_abs_row_mean(m.W_U) < zero);
  CHECK(std::abs(static_cast<double>(m.b_U.mean())) < zero);
  for (const auto& layer : m.layers) {
    CHECK(layer.ln1.type == NormalizationType::LNPre);
    CHECK((layer.ln1.w.size() == 0 && layer.ln1.b.size() == 0));
    CHECK(std::abs(static_cast<double>(layer.b_O.mean())) < zero);
    for (const auto& head : layer.heads) {
      CHECK(max_abs_row_mean(head.W_O) < zero);
      CHECK(max_abs_row_mean(head.W_Q.transpose()) < zero);  // reading weights centred too
      CHECK(max_abs_row_mean(head.W_K.transpose()) < zero);
      CHECK(max_abs_row_mean(head.W_V.transpose()) < zero);
      CHECK(head.b_V.isZero(0));
    }
  }
}

TEST_CASE_TEMPLATE("Processing a processed model changes nothing beyond rounding", T, float,
                   double) {
  const AttentionOnlyModel<T> once = circuitry::processed(load<T>("attn-only-tiny"));
  SUBCASE("fold_layer_norm on an LNPre model leaves it exactly as it was") {
    AttentionOnlyModel<T> again = once;
    circuitry::fold_layer_norm(again);
    CHECK(again.processing == once.processing);
    CHECK(again.config == once.config);
    CHECK((again.W_U.array() == once.W_U.array()).all());
    CHECK((again.b_U.array() == once.b_U.array()).all());
    for (const auto& id : once.head_ids()) {
      CHECK((again.head(id).W_Q.array() == once.head(id).W_Q.array()).all());
      CHECK((again.head(id).b_V.array() == once.head(id).b_V.array()).all());
    }
  }
  SUBCASE("process_weights twice equals once") {
    const AttentionOnlyModel<T> twice = circuitry::processed(once);
    const double tol = tolerance<T>();
    CHECK(twice.config == once.config);
    CHECK(rel_diff<T>(twice.W_E, once.W_E) < tol);
    CHECK(rel_diff<T>(twice.W_U, once.W_U) < tol);
    CHECK(rel_diff<T>(twice.b_U, once.b_U) < tol);
    for (const auto& id : once.head_ids()) {
      CAPTURE(id.name());
      CHECK(rel_diff<T>(twice.head(id).W_O, once.head(id).W_O) < tol);
      CHECK(rel_diff<T>(twice.head(id).W_V, once.head(id).W_V) < tol);
    }
    for (std::size_t l = 0; l < once.layers.size(); ++l) {
      CHECK(rel_diff<T>(twice.layers[l].b_O, once.layers[l].b_O) < tol);
    }
  }
}

TEST_CASE("process_weights skips what needs LayerNorm on a model without it") {
  AttentionOnlyModel<double> m = load<double>("attn-only-tiny");
  m.config.normalization_type = NormalizationType::none;
  for (auto& layer : m.layers) layer.ln1 = {};
  m.ln_final = {};
  const AttentionOnlyModel<double> raw = m;
  circuitry::process_weights(m);
  CHECK(!m.processing.fold_ln);
  CHECK(!m.processing.center_writing_weights);  // nothing would remove the mean of the stream
  CHECK((m.processing.center_unembed && m.processing.fold_value_biases));
  CHECK(m.config.normalization_type == NormalizationType::none);
  CHECK((m.W_E.array() == raw.W_E.array()).all());
  CHECK((m.head(0, 0).W_O.array() == raw.head(0, 0).W_O.array()).all());
}

TEST_CASE("The processed models give TransformerLens's Frobenius norms; the raw ones do not") {
  // Dense here: ||W_V W_O||_F, ||W_Q W_K^T||_F, and for the full circuits, through the Gram
  // identity ||A B||_F^2 = trace((A^T A)(B B^T)), A = W_E W_V, B = W_O W_U (OV) or
  // A = W_E W_Q, B = (W_E W_K)^T (QK).
  for (const char* name : model_names) {
    CAPTURE(name);
    const json ref = reference(name);
    const AttentionOnlyModel<double> raw = load<double>(name);
    const AttentionOnlyModel<double> m = circuitry::processed(raw);
    for (const auto& id : m.head_ids()) {
      CAPTURE(id.name());
      const auto& h = m.head(id);
      const auto figure = [&](const char* key) {
        return ref.at(key).at(std::size_t(id.layer)).at(std::size_t(id.head)).get<double>();
      };
      CHECK((h.W_V * h.W_O).norm() == doctest::Approx(figure("ov_frobenius")).epsilon(1e-6));
      CHECK((h.W_Q * h.W_K.transpose()).norm() ==
            doctest::Approx(figure("qk_frobenius")).epsilon(1e-6));
      const Matrix<double> A_ov = m.W_E * h.W_V, B_ov = h.W_O * m.W_U;
      const Matrix<double> A_qk = m.W_E * h.W_Q, B_qk = (m.W_E * h.W_K).transpose();
      const auto gram_norm = [](const Matrix<double>& A, const Matrix<double>& B) {
        return std::sqrt(((A.transpose() * A) * (B * B.transpose())).trace());
      };
      CHECK(gram_norm(A_ov, B_ov) == doctest::Approx(figure("full_ov_frobenius")).epsilon(1e-6));
      CHECK(gram_norm(A_qk, B_qk) == doctest::Approx(figure("full_qk_frobenius")).epsilon(1e-6));
      if (id == circuitry::HeadId{0, 0}) {  // processing matters: the raw weights miss the figure
        const auto& r = raw.head(id);
        CHECK((r.W_V * r.W_O).norm() != doctest::Approx(figure("ov_frobenius")).epsilon(1e-6));
        CHECK((r.W_Q * r.W_K.transpose()).norm() !=
              doctest::Approx(figure("qk_frobenius")).epsilon(1e-6));
      }
    }
  }
}
