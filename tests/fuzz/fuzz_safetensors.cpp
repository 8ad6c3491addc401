// libFuzzer fuzzer of the safetensors reader and the model loader (README, "Robustness").
// Any input must either load or throw a circuitry::error; whatever loads is read back in full
// (every tensor in every way its dtype allows, then the model) under the sanitizers. Spectra
// of hostile weights are unit tests (test_circuits.cpp, test_eigenvalues.cpp): Eigen's
// eigensolvers would triple this fuzzer's build time.
//
//     build/asan/tests/fuzz/circuitry_fuzz_safetensors CORPUS_DIR tests/fuzz/corpus/safetensors
#include <circuitry/model_io.hpp>
#include <circuitry/processing.hpp>
#include <circuitry/safetensors.hpp>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace {

/// Every tensor read out in every way its dtype allows.
void read_everything(const circuitry::SafetensorsFile& file) {
  for (const circuitry::TensorInfo& t : file.tensors()) {
    try {
      if (circuitry::is_floating(t.dtype)) {
        file.check_finite(t.name);
        (void)file.values<float>(t.name);
        if (t.shape.size() == 2) (void)file.matrix<double>(t.name, t.shape[0], t.shape[1]);
        if (t.shape.size() == 3) {
          (void)file.matrices<float>(t.name, t.shape[0], t.shape[1], t.shape[2]);
        }
      } else {
        (void)file.integers(t.name);
      }
    } catch (const circuitry::error&) {
      // numerical_error (NaN, inf) or format_error (a U64 past int64): both are answers.
    }
  }
}

/// The model, if the file is one, read in full and processed as TransformerLens does.
template <typename Scalar>
void load_and_process(const circuitry::SafetensorsFile& file) {
  try {
    circuitry::AttentionOnlyModel<Scalar> model = circuitry::load_model<Scalar>(file);
    circuitry::process_weights(model);
  } catch (const circuitry::error&) {
    // Not a model, a bad config, or NaN weights: all reported.
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto file = circuitry::SafetensorsFile::from_bytes(
        std::vector<std::uint8_t>(data, data + size), "fuzz.safetensors");
    read_everything(file);
    load_and_process<float>(file);
    load_and_process<double>(file);
  } catch (const circuitry::error&) {
    // Rejected with a typed error: the expected outcome for most inputs.
  }
  return 0;
}
