// The header check (.ci/run, check_headers): the umbrella header with every public template
// instantiated for float and double, compiled with -Wall -Wextra -Wpedantic -Wconversion
// -Wshadow -Werror by gcc and clang, as C++17 and C++20. Templates only warn once they are
// instantiated, so the functions below call every entry point; nothing here runs.
#include <circuitry/circuitry.hpp>
#include <string>
#include <vector>

namespace circuitry {
template class FactoredMatrix<float>;
template class FactoredMatrix<double>;
template class ResidualStream<float>;
template class ResidualStream<double>;
template class PathExpansion<float>;
template class PathExpansion<double>;
}  // namespace circuitry

namespace {

template <typename Scalar>
void instantiate(const std::string& path, const circuitry::Tokens& tokens) {
  using namespace circuitry;
  AttentionOnlyModel<Scalar> model = load_model<Scalar>(path);
  process_weights(model);
  save_model(model, path + ".out");
  const HeadId head{0, 0};
  const EmbeddingGrams<Scalar> grams(model);
  (void)copying_score(full_ov_eigenvalues(model, grams, head));
  (void)copying_score(full_qk_eigenvalues(model, grams, head));
  (void)copying_score(ov_eigenvalues(model, head));
  (void)copying_score(qk_eigenvalues(model, head));
  (void)full_ov_frobenius(model, grams, head);
  (void)full_qk_frobenius(model, grams, head);
  (void)full_ov_copying_accuracy(model, head);
  (void)direct_path(model).thin_svd();
  (void)full_qk_circuit(model, head).top_k_rows(5);
  (void)full_ov_circuit(model, head).top_k_rows(std::vector<Index>{0}, 1);
  (void)(full_ov_circuit(model, head) * full_qk_circuit(model, head)).singular_values();
  (void)composition_scores(model, CompositionType::K);
  (void)composition_baseline<Scalar>(8, 2, 2);
  (void)k_composition_circuit(model, head, HeadId{1, 0});
  (void)q_composition_circuit(model, head, HeadId{1, 0});
  const ForwardResult<Scalar> run = run_with_cache(model, tokens);
  (void)decompose_scores(model, run, HeadId{1, 0}, 0);
  (void)previous_token_scores(run);
  (void)induction_scores(run, 2);
  (void)duplicate_token_scores(run, tokens);
  (void)repeated_halves_loss(run);
  const PathExpansion<Scalar> pe(model, tokens);
  (void)summarize(pe);
  (void)summarize_by_order(pe.frozen());
  nlohmann::json out = circuit_report(model);
  report_tokens(model, tokens, out);
  report_induction(model, tokens, out);
  const SafetensorsFile file = SafetensorsFile::open(path);
  (void)file.values<Scalar>("embed.W_E");
  (void)file.integers("embed.W_E");
  file.check_finite("embed.W_E");
}

}  // namespace

// Not main: this translation unit is compiled, never linked.
void circuitry_instantiate_all(const std::string& path, const circuitry::Tokens& tokens) {
  instantiate<float>(path, tokens);
  instantiate<double>(path, tokens);
  const circuitry::Tokenizer tok = circuitry::Tokenizer::from_file(path);
  (void)tok.decode(tok.encode("x"));
  circuitry::ModelConfig config = circuitry::read_config_file(path);
  circuitry::apply_config_json(config, circuitry::read_config_json_file(path), path);
}
