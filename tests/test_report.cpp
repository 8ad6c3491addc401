// circuit_report (report.hpp) against TransformerLens's reference figures on the shared models.
#include <doctest/doctest.h>

#include <circuitry/report.hpp>
#include <limits>
#include <map>

#include "support/random_model.hpp"
#include "support/reference.hpp"

using namespace circuitry;
using circuitry::test::reference;
using circuitry::test::relative_error;

namespace {

/// Every number of an [L][H] / [L][H][d] / [L][H][L][H] array agrees within `tol` relative.
void check_nested_numbers(const nlohmann::json& got, const nlohmann::json& want, double tol,
                          const std::string& path) {
  if (want.is_array()) {
    REQUIRE_MESSAGE(got.is_array(), path);
    REQUIRE_MESSAGE(got.size() == want.size(), path);
    for (std::size_t i = 0; i < want.size(); ++i) {
      check_nested_numbers(got[i], want[i], tol, path + "[" + std::to_string(i) + "]");
    }
  } else {
    const double g = got.get<double>(), w = want.get<double>();
    INFO(path, ": got ", g, ", reference ", w);
    CHECK(relative_error(g, w) <= tol);
  }
}

template <typename Scalar>
void check_spectra_key(const nlohmann::json& got, const nlohmann::json& ref, const std::string& key,
                       double tol) {
  const auto& re = got.at(key).at("re");
  for (std::size_t l = 0; l < re.size(); ++l) {
    for (std::size_t h = 0; h < re[l].size(); ++h) {
      ComplexVector<double> computed(static_cast<Index>(re[l][h].size()));
      for (std::size_t i = 0; i < re[l][h].size(); ++i) {
        computed(static_cast<Index>(i)) = {re[l][h][i].get<double>(),
                                           got.at(key).at("im")[l][h][i].get<double>()};
      }
      const auto expected =
          test::reference_spectrum(ref, key, static_cast<int>(l), static_cast<int>(h));
      INFO(key, " of L", l, "H", h);
      CHECK(test::multiset_relative_distance<double>(computed, expected) <= tol);
    }
  }
}

/// The full report of a processed shared model, computed once per scalar type (doctest
/// re-enters a test case for each SUBCASE).
template <typename Scalar>
const nlohmann::json& full_report(const std::string& name) {
  static std::map<std::string, nlohmann::json> cache;
  auto it = cache.find(name);
  if (it == cache.end()) {
    it = cache.emplace(name, circuit_report(test::processed_model<Scalar>(name))).first;
  }
  return it->second;
}

}  // namespace

TEST_CASE_TEMPLATE("the circuit report agrees with TransformerLens on every shared model", Scalar,
                   float, double) {
  const double tol = test::reference_tolerance<Scalar>();
  for (const std::string& name : test::shared_models()) {
    CAPTURE(name);
    const nlohmann::json& ref = reference(name);
    const nlohmann::json& got = full_report<Scalar>(name);

    SUBCASE("spectra, as multisets of eigenvalues") {
      for (const char* key :
           {"ov_eigenvalues", "qk_eigenvalues", "full_ov_eigenvalues", "full_qk_eigenvalues"}) {
        check_spectra_key<Scalar>(got, ref, key, tol);
      }
    }
    SUBCASE("copying scores, positivity and singular values") {
      for (const char* key : {"ov_copying_score", "qk_positivity", "full_ov_copying_score",
                              "full_qk_positivity", "ov_singular_values"}) {
        check_nested_numbers(got.at(key), ref.at(key), tol, key);
      }
    }
    SUBCASE("Frobenius norms") {
      for (const char* key :
           {"ov_frobenius", "qk_frobenius", "full_ov_frobenius", "full_qk_frobenius"}) {
        check_nested_numbers(got.at(key), ref.at(key), tol, key);
      }
    }
    SUBCASE("composition scores") {
      for (const char* key : {"composition_Q", "composition_K", "composition_V"}) {
        check_nested_numbers(got.at(key), ref.at(key), tol, key);
      }
    }
    SUBCASE("copying accuracies") {
      // Counts out of d_vocab: in float a near-tie may flip one token (1 / d_vocab).
      const double acc_tol = std::is_same<Scalar, double>::value ? 0.0 : 2.0 / 4096;
      for (const char* key : {"full_ov_top1_copying_acc", "full_ov_top5_copying_acc"}) {
        for (std::size_t l = 0; l < ref.at(key).size(); ++l) {
          for (std::size_t h = 0; h < ref.at(key)[l].size(); ++h) {
            INFO(key, " of L", l, "H", h);
            CHECK(std::abs(got.at(key)[l][h].get<double>() - ref.at(key)[l][h].get<double>()) <=
                  acc_tol);
          }
        }
      }
    }
    SUBCASE("top-5 tokens of the full circuits and of the direct path") {
      CHECK(got.at("probe_tokens") == ref.at("probe_tokens"));
      CHECK(got.at("direct_path_top5_next") == ref.at("direct_path_top5_next"));
      for (const auto& item : ref.at("full_circuit_top5").items()) {
        INFO(item.key());
        CHECK(got.at("full_circuit_top5").at(item.key()) == item.value());
      }
    }
  }
}

TEST_CASE("the report holds exactly the keys of the groups asked for") {
  const auto& model = test::processed_model<double>("attn-only-tiny");
  ReportOptions options;
  options.groups = parse_report_groups("norms,composition");
  const nlohmann::json got = circuit_report(model, options);
  std::vector<std::string> keys;
  for (const auto& item : got.items()) keys.push_back(item.key());
  CHECK(keys == std::vector<std::string>{"composition_K", "composition_Q", "composition_V",
                                         "full_ov_frobenius", "full_qk_frobenius", "ov_frobenius",
                                         "qk_frobenius"});
}

TEST_CASE("the default probe tokens are the references' evenly spaced tokens") {
  CHECK(nlohmann::json(default_probe_tokens(4096)) == reference("attn-only-2l").at("probe_tokens"));
}

TEST_CASE("given probe tokens choose the rows of the top-5 lists") {
  const auto& model = test::processed_model<double>("attn-only-2l");
  const auto& ref = reference("attn-only-2l");
  ReportOptions options;
  options.groups = {"top"};
  options.probe_tokens = {ref.at("probe_tokens")[3].get<int>(),
                          ref.at("probe_tokens")[0].get<int>()};
  const nlohmann::json got = circuit_report(model, options);
  CHECK(got.at("full_circuit_top5").at("L1H4")[0] == ref.at("full_circuit_top5").at("L1H4")[3]);
  CHECK(got.at("full_circuit_top5").at("L1H4")[1] == ref.at("full_circuit_top5").at("L1H4")[0]);
}

TEST_CASE_TEMPLATE("the top lists are the full circuits' own top-k rows, past one block of rows",
                   Scalar, float, double) {
  // 4 x 40 heads x 2 probes = 320 stacked rows: more than one 256-row block of the product.
  test::RandomModelSpec spec;
  spec.n_layers = 4;
  spec.n_heads = 40;
  spec.d_vocab = 60;
  spec.seed = 7;
  const auto model = test::random_model<Scalar>(spec);
  ReportOptions options;
  options.groups = {"top"};
  options.probe_tokens = {59, 3};
  options.top_k = 4;
  const nlohmann::json got = circuit_report(model, options);
  const std::vector<Index> rows = {59, 3};
  const auto as_json = [](const TopK<Scalar>& top) {  // the report's layout: [row][rank]
    return detail::top_k_json(top, 0, top.indices.rows());
  };
  for (const HeadId id : model.head_ids()) {
    CAPTURE(id.name());
    CHECK(got.at("full_circuit_top5").at(id.name()) ==
          as_json(full_ov_circuit(model, id).top_k_rows(rows, 4)));
    CHECK(got.at("full_circuit_top5").at(id.name() + "_qk_top_keys_for_query") ==
          as_json(full_qk_circuit(model, id).top_k_rows(rows, 4)));
  }
  CHECK(got.at("direct_path_top5_next") ==
        as_json(FactoredMatrix<Scalar>(model.W_E, model.W_U).top_k_rows(rows, 4)));
}

TEST_CASE("bad report arguments are rejected with a message naming them") {
  CHECK_THROWS_WITH_AS(parse_report_groups("spectra,eigen"),
                       "[circuitry.argument_error] --only: unknown group 'eigen' (expected a comma "
                       "list of spectra, norms, composition, copying, top)",
                       argument_error);
  const auto& model = test::processed_model<double>("attn-only-tiny");
  ReportOptions options;
  options.groups = {"top"};
  options.probe_tokens = {5, 4096};
  CHECK_THROWS_WITH_AS(
      circuit_report(model, options),
      "[circuitry.argument_error] probe token 4096 is outside the vocabulary [0, 4096)",
      argument_error);
}

TEST_CASE("a loop over heads runs every piece once and rethrows the first piece's error") {
  std::vector<int> runs(40, 0);
  const auto piece = [&](Index i) {
    ++runs[static_cast<std::size_t>(i)];
    if (i == 29 || i == 11 || i == 17) throw argument_error("piece " + std::to_string(i));
  };
  CHECK_THROWS_WITH_AS(detail::parallel_for(40, piece), "[circuitry.argument_error] piece 11",
                       argument_error);
  CHECK(runs == std::vector<int>(40, 1));
  CHECK_NOTHROW(detail::parallel_for(0, piece));
}

TEST_CASE("a report's failing eigensolver names the first failing head, whatever the threads") {
  test::RandomModelSpec spec;
  spec.n_layers = 2;
  spec.n_heads = 4;
  auto model = test::random_model<double>(spec);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  model.layers[1].heads[2].W_V(0, 0) = nan;  // L1H2's OV circuit
  model.layers[0].heads[3].W_Q(0, 0) = nan;  // L0H3's QK circuit: the first in head order
  ReportOptions options;
  options.groups = {"spectra"};
#ifdef _OPENMP
  const int threads = omp_get_max_threads();
#endif
  for (int t : {1, 2, 4}) {
    CAPTURE(t);
#ifdef _OPENMP
    omp_set_num_threads(t);
#endif
    CHECK_THROWS_WITH_AS(circuit_report(model, options),
                         "[circuitry.numerical_error] eigenvalues of the QK circuit of L0H3: the "
                         "matrix holds NaN or infinity, or an eigenvalue overflows",
                         numerical_error);
  }
#ifdef _OPENMP
  omp_set_num_threads(threads);
#endif
}
