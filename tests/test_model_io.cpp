// Tests of circuitry/model_io.hpp: loading the shared models (config from metadata or read off
// the weights), overrides, round trips, and one test per broken file, each pinning its message.
// Broken files are the tiny model's tensors copied byte for byte into a SafetensorsWriter, with
// one change, and read back with SafetensorsFile::from_bytes.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "circuitry/model_io.hpp"
#include "circuitry/processing.hpp"

using circuitry::AttentionOnlyModel;
using circuitry::Dtype;
using circuitry::LoadOptions;
using circuitry::ModelConfig;
using circuitry::SafetensorsFile;
using circuitry::SafetensorsWriter;
using nlohmann::json;

namespace {

const char* const model_names[] = {"attn-only-tiny", "attn-only-1l", "attn-only-2l"};

std::string model_path(const std::string& name) {
  return CIRCUITRY_MODELS_DIR "/" + name + ".safetensors";
}

json reference(const std::string& name) {
  std::ifstream in(CIRCUITRY_TEST_DATA_DIR "/reference/" + name + ".json");
  REQUIRE(in);
  return json::parse(in);
}

ModelConfig reference_config(const std::string& name) {
  ModelConfig c;
  circuitry::apply_config_json(c, reference(name).at("config"), "reference " + name);
  return c;
}

/// Element `flat` of an F32 tensor, decoded from its little-endian bytes here (not by the
/// library's converters).
float raw_f32(const SafetensorsFile& file, const std::string& name, std::int64_t flat) {
  const circuitry::TensorInfo& t = file.info(name);
  REQUIRE(t.dtype == Dtype::F32);
  const std::uint8_t* p = file.data(t) + 4 * flat;
  const std::uint32_t bits = std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 |
                             std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24;
  float v = 0;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

/// A copy of `src`, tensor by tensor (raw bytes), without the tensors in `drop`, each passed
/// through `edit` first; the metadata is kept only when `keep_metadata`.
struct Rewrite {
  bool keep_metadata = false;
  std::set<std::string> drop;
  std::function<void(const std::string&, std::vector<std::int64_t>&, std::vector<std::uint8_t>&)>
      edit;

  SafetensorsWriter writer(const SafetensorsFile& src) const {
    SafetensorsWriter w;
    if (keep_metadata) {
      for (const auto& kv : src.metadata()) w.set_metadata(kv.first, kv.second);
    }
    for (const circuitry::TensorInfo& t : src.tensors()) {
      if (drop.count(t.name)) continue;
      std::vector<std::int64_t> shape = t.shape;
      std::vector<std::uint8_t> bytes(src.data(t), src.data(t) + t.nbytes());
      if (edit) edit(t.name, shape, bytes);
      w.add_raw(t.name, t.dtype, shape, std::move(bytes));
    }
    return w;
  }
  SafetensorsFile apply(const SafetensorsFile& src, const std::string& name) const {
    return SafetensorsFile::from_bytes(writer(src).bytes(), name);
  }
};

/// Writes float `v` as element `flat` of an F32 tensor's bytes.
void poke_f32(std::vector<std::uint8_t>& bytes, std::int64_t flat, float v) {
  std::uint32_t bits = 0;
  std::memcpy(&bits, &v, sizeof v);
  for (int b = 0; b < 4; ++b)
    bytes[static_cast<std::size_t>(4 * flat + b)] = std::uint8_t(bits >> (8 * b));
}

template <typename A, typename B>
bool same(const Eigen::MatrixBase<A>& a, const Eigen::MatrixBase<B>& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() && (a.array() == b.array()).all();
}

/// Checks that two models have the same config and bit-identical weights.
template <typename T>
void check_same_model(const AttentionOnlyModel<T>& a, const AttentionOnlyModel<T>& b) {
  const auto same_ln = [](const auto& x, const auto& y) {
    return x.type == y.type && same(x.w, y.w) && same(x.b, y.b);
  };
  CHECK(a.config == b.config);
  CHECK((same(a.W_E, b.W_E) && same(a.W_pos, b.W_pos) && same(a.W_U, b.W_U) && same(a.b_U, b.b_U)));
  CHECK(same_ln(a.ln_final, b.ln_final));
  REQUIRE(a.head_ids() == b.head_ids());
  for (std::size_t l = 0; l < a.layers.size(); ++l) {
    CAPTURE(l);
    CHECK((same_ln(a.layers[l].ln1, b.layers[l].ln1) && same(a.layers[l].b_O, b.layers[l].b_O)));
  }
  for (const auto& id : a.head_ids()) {
    const auto& x = a.head(id);
    const auto& y = b.head(id);
    CAPTURE(id.name());
    CHECK((same(x.W_Q, y.W_Q) && same(x.W_K, y.W_K) && same(x.W_V, y.W_V) && same(x.W_O, y.W_O)));
    CHECK((same(x.b_Q, y.b_Q) && same(x.b_K, y.b_K) && same(x.b_V, y.b_V)));
  }
}

/// A fresh directory under /tmp, removed with its content at scope exit.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    char name[] = "/tmp/circuitry_model_io_XXXXXX";
    REQUIRE(::mkdtemp(name) != nullptr);
    path = name;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

const std::string tiny = "attn-only-tiny";

/// "[a, b, c]", as the library prints shapes.
std::string dims(std::initializer_list<long long> shape) {
  std::string s = "[";
  for (long long d : shape) s += (s.size() > 1 ? ", " : "") + std::to_string(d);
  return s + "]";
}

}  // namespace

TEST_CASE_TEMPLATE("Each shared model loads with its reference config, shapes and raw values", T,
                   float, double) {
  for (const char* name : model_names) {
    CAPTURE(name);
    const SafetensorsFile file = SafetensorsFile::open(model_path(name));
    const AttentionOnlyModel<T> m = circuitry::load_model<T>(file);
    const ModelConfig& c = m.config;
    CHECK(c == reference_config(name));
    CHECK_NOTHROW(m.check_shapes());
    CHECK((m.n_layers() == c.n_layers && m.n_heads() == c.n_heads));
    CHECK((m.W_E.rows() == c.d_vocab && m.W_E.cols() == c.d_model && m.b_U.size() == c.d_vocab));
    CHECK((m.W_pos.rows() == c.n_ctx && m.W_U.rows() == c.d_model && m.W_U.cols() == c.d_vocab));
    const auto& head = m.head(c.n_layers - 1, 2);
    CHECK((head.W_Q.rows() == c.d_model && head.W_Q.cols() == c.d_head));
    CHECK((head.W_O.rows() == c.d_head && head.W_O.cols() == c.d_model));
    CHECK((m.ln_final.type == circuitry::NormalizationType::LN && m.ln_final.eps == T(c.eps)));
    CHECK(m.processing == circuitry::WeightProcessing{});

    // Entries against the row-major bytes: W_E[3, 5]; W_Q[head 2][7, 1] of the last layer;
    // W_O[head 1][4, 9]; W_U[4, 100]; b_Q[2, 3]; ln1.w[6]; b_U[11].
    const std::int64_t D = c.d_model, d = c.d_head, V = c.d_vocab;
    const std::string last = "blocks." + std::to_string(c.n_layers - 1);
    CHECK(m.W_E(3, 5) == T(raw_f32(file, "embed.W_E", 3 * D + 5)));
    CHECK(head.W_Q(7, 1) == T(raw_f32(file, last + ".attn.W_Q", (2 * D + 7) * d + 1)));
    CHECK(m.head(0, 1).W_O(4, 9) == T(raw_f32(file, "blocks.0.attn.W_O", (1 * d + 4) * D + 9)));
    CHECK(m.W_U(4, 100) == T(raw_f32(file, "unembed.W_U", 4 * V + 100)));
    CHECK(head.b_Q(3) == T(raw_f32(file, last + ".attn.b_Q", 2 * d + 3)));
    CHECK(m.layers[0].ln1.w(6) == T(raw_f32(file, "blocks.0.ln1.w", 6)));
    CHECK(m.b_U(11) == T(raw_f32(file, "unembed.b_U", 11)));
  }
}

TEST_CASE("A file without config metadata loads with the config read off the weights") {
  for (const char* name : model_names) {
    CAPTURE(name);
    const SafetensorsFile file = SafetensorsFile::open(model_path(name));
    const SafetensorsFile bare = Rewrite{}.apply(file, "bare.safetensors");
    REQUIRE(bare.metadata().empty());
    const auto with_metadata = circuitry::load_model<float>(file);
    const auto inferred = circuitry::load_model<float>(bare);
    CHECK(inferred.config == reference_config(name));
    check_same_model(inferred, with_metadata);
  }
}

TEST_CASE("LoadOptions::config_overrides apply on top of the file's config") {
  const SafetensorsFile file = SafetensorsFile::open(model_path(tiny));
  LoadOptions options;
  options.config_overrides = {{"positional_embedding_type", "shortformer"}};
  ModelConfig expected = reference_config(tiny);
  expected.positional_embedding_type = circuitry::PositionalEmbeddingType::shortformer;
  SUBCASE("with metadata") {
    CHECK(circuitry::load_model<float>(file, options).config == expected);
  }
  SUBCASE("without metadata") {
    CHECK(circuitry::load_model<float>(Rewrite{}.apply(file, "bare"), options).config == expected);
  }
  SUBCASE("an override that contradicts the weights is a config_error") {
    options.config_overrides = {{"n_ctx", 2 * expected.n_ctx}};
    const std::string message =
        "tensor 'pos_embed.W_pos' has shape " + dims({expected.n_ctx, expected.d_model}) +
        ", expected " + dims({2 * expected.n_ctx, expected.d_model}) + " = [n_ctx, d_model]";
    CHECK_THROWS_WITH_AS(circuitry::load_model<float>(file, options),
                         doctest::Contains(message.c_str()), circuitry::config_error);
  }
  SUBCASE("a bad override names the overrides") {
    options.config_overrides = {{"positional_embedding_type", "rotary"}};
    CHECK_THROWS_WITH_AS(circuitry::load_model<float>(file, options),
                         doctest::Contains("config overrides: 'positional_embedding_type' must be"),
                         circuitry::config_error);
  }
}

TEST_CASE("A config that contradicts the weights is a config_error naming tensor and shapes") {
  const SafetensorsFile file = SafetensorsFile::open(model_path(tiny));
  const ModelConfig ref = reference_config(tiny);
  LoadOptions options;
  options.config = ref;
  const std::string where = "[circuitry.config_error] file '" + model_path(tiny) + "': ";
  SUBCASE("d_model 128") {
    options.config->d_model = 128;
    const std::string message = where + "tensor 'embed.W_E' has shape " +
                                dims({ref.d_vocab, ref.d_model}) + ", expected " +
                                dims({ref.d_vocab, 128}) +
                                " = [d_vocab, d_model] from the config: the config contradicts the "
                                "weights";
    CHECK_THROWS_WITH_AS(circuitry::load_model<double>(file, options), message.c_str(),
                         circuitry::config_error);
  }
  SUBCASE("n_layers too small") {
    options.config->n_layers = ref.n_layers - 1;
    CHECK_THROWS_WITH_AS(
        circuitry::load_model<double>(file, options),
        (where + "config says n_layers = " + std::to_string(ref.n_layers - 1) +
         " but the file has tensor 'blocks." + std::to_string(ref.n_layers - 1) + ".attn.W_Q'")
            .c_str(),
        circuitry::config_error);
  }
  SUBCASE("n_layers too large") {
    options.config->n_layers = ref.n_layers + 1;
    const std::string message =
        where + "config says n_layers = " + std::to_string(ref.n_layers + 1) +
        " but the file has no tensor 'blocks." + std::to_string(ref.n_layers) + ".attn.W_Q'";
    CHECK_THROWS_WITH_AS(circuitry::load_model<double>(file, options), message.c_str(),
                         circuitry::config_error);
  }
}

TEST_CASE("A missing tensor is a format_error naming the file and the tensor") {
  const SafetensorsFile file = SafetensorsFile::open(model_path(tiny));
  const ModelConfig ref = reference_config(tiny);
  Rewrite rewrite;
  SUBCASE("unembed.W_U, no metadata") {
    rewrite.drop = {"unembed.W_U"};
    const std::string message =
        "[circuitry.format_error] file 'no_W_U': tensor 'unembed.W_U' not found (expected " +
        dims({ref.d_model, ref.d_vocab}) + " = [d_model, d_vocab])";
    CHECK_THROWS_WITH_AS(circuitry::load_model<float>(rewrite.apply(file, "no_W_U")),
                         message.c_str(), circuitry::format_error);
  }
  SUBCASE("unembed.W_U, with metadata: still a missing tensor") {
    rewrite.drop = {"unembed.W_U"};
    rewrite.keep_metadata = true;
    CHECK_THROWS_WITH_AS(circuitry::load_model<float>(rewrite.apply(file, "no_W_U")),
                         doctest::Contains("file 'no_W_U': tensor 'unembed.W_U' not found"),
                         circuitry::format_error);
  }
  SUBCASE("embed.W_E, needed to read d_vocab") {
    rewrite.drop = {"embed.W_E"};
    CHECK_THROWS_WITH_AS(circuitry::load_model<float>(rewrite.apply(file, "no_W_E")),
                         "[circuitry.format_error] file 'no_W_E': tensor 'embed.W_E' not found",
                         circuitry::format_error);
  }
  SUBCASE("no attention layer at all") {
    rewrite.drop = {"blocks.0.attn.W_Q"};
    CHECK_THROWS_WITH_AS(circuitry::load_model<float>(rewrite.apply(file, "no_W_Q")),
                         doctest::Contains("file 'no_W_Q': tensor 'blocks.0.attn.W_Q' not found: "
                                           "not a TransformerLens attention-only model"),
                         circuitry::format_error);
  }
}

TEST_CASE("A tensor of the wrong shape is a shape_error, or a config_error against metadata") {
  const SafetensorsFile file = SafetensorsFile::open(model_path(tiny));
  const ModelConfig c = reference_config(tiny);
  Rewrite rewrite;
  rewrite.edit = [&](const std::string& name, std::vector<std::int64_t>& shape,
                     std::vector<std::uint8_t>& bytes) {
    if (name != "blocks.1.attn.W_K") return;
    shape[2] /= 2;  // [n_heads, d_model, d_head / 2]: the first half of the bytes
    bytes.resize(bytes.size() / 2);
  };
  const std::string message = "file 'bad_W_K': tensor 'blocks.1.attn.W_K' has shape " +
                              dims({c.n_heads, c.d_model, c.d_head / 2}) + ", expected " +
                              dims({c.n_heads, c.d_model, c.d_head}) +
                              " = [n_heads, d_model, d_head]";
  SUBCASE("without metadata") {
    CHECK_THROWS_WITH_AS(circuitry::load_model<float>(rewrite.apply(file, "bad_W_K")),
                         ("[circuitry.shape_error] " + message).c_str(), circuitry::shape_error);
  }
  SUBCASE("with metadata") {
    rewrite.keep_metadata = true;
    CHECK_THROWS_WITH_AS(circuitry::load_model<float>(rewrite.apply(file, "bad_W_K")),
                         ("[circuitry.config_error] " + message +
                          " from the config: the config contradicts the weights")
                             .c_str(),
                         circuitry::config_error);
  }
}

TEST_CASE_TEMPLATE("A NaN or infinite weight is a numerical_error naming tensor and index", T,
                   float, double) {
  const SafetensorsFile file = SafetensorsFile::open(model_path(tiny));
  const ModelConfig c = reference_config(tiny);
  const std::int64_t D = c.d_model, d = c.d_head;
  std::string tensor;
  std::int64_t flat = 0;
  float bad = std::numeric_limits<float>::quiet_NaN();
  std::string expected;
  SUBCASE("NaN in W_E[3, 5]") {
    tensor = "embed.W_E";
    flat = 3 * D + 5;
    expected = "holds nan at index [3, 5]";
  }
  SUBCASE("infinity in W_Q[head 2][7, 1] of layer 1") {
    tensor = "blocks.1.attn.W_Q";
    flat = (2 * D + 7) * d + 1;
    bad = std::numeric_limits<float>::infinity();
    expected = "holds inf at index [2, 7, 1]";
  }
  SUBCASE("minus infinity in b_U[10]") {
    tensor = "unembed.b_U";
    flat = 10;
    bad = -std::numeric_limits<float>::infinity();
    expected = "holds -inf at index [10]";
  }
  Rewrite rewrite;
  rewrite.keep_metadata = true;
  rewrite.edit = [&](const std::string& name, std::vector<std::int64_t>&,
                     std::vector<std::uint8_t>& bytes) {
    if (name == tensor) poke_f32(bytes, flat, bad);
  };
  const SafetensorsFile broken = rewrite.apply(file, "nonfinite");
  CHECK_THROWS_WITH_AS(
      circuitry::load_model<T>(broken),
      ("[circuitry.numerical_error] file 'nonfinite': tensor '" + tensor + "' " + expected).c_str(),
      circuitry::numerical_error);

  LoadOptions unchecked;
  unchecked.check_finite = false;
  const AttentionOnlyModel<T> m = circuitry::load_model<T>(broken, unchecked);
  if (tensor == "embed.W_E") CHECK(std::isnan(m.W_E(3, 5)));
  if (tensor == "blocks.1.attn.W_Q") CHECK(m.head(1, 2).W_Q(7, 1) == T(bad));
  if (tensor == "unembed.b_U") CHECK(m.b_U(10) == T(bad));
}

TEST_CASE_TEMPLATE("save_model then load_model gives back the same model", T, float, double) {
  // Doubles are saved as F64, floats as F32: both exact.
  const Dtype dtype = std::is_same<T, double>::value ? Dtype::F64 : Dtype::F32;
  const TempDir dir;
  const std::string path = dir.file("model.safetensors");
  AttentionOnlyModel<T> m = circuitry::load_model<T>(model_path(tiny));
  SUBCASE("as loaded (LN)") {}
  SUBCASE("processed (LNPre)") {
    circuitry::process_weights(m);
    REQUIRE(m.config.normalization_type == circuitry::NormalizationType::LNPre);
  }
  SUBCASE("no LayerNorm, shortformer") {
    m.config.normalization_type = circuitry::NormalizationType::none;
    m.config.positional_embedding_type = circuitry::PositionalEmbeddingType::shortformer;
    for (auto& layer : m.layers) layer.ln1 = {};
    m.ln_final = {};
  }
  circuitry::save_model(m, path, dtype);
  const SafetensorsFile saved = SafetensorsFile::open(path);
  CHECK(saved.info("embed.W_E").dtype == dtype);
  CHECK(saved.contains("blocks.0.ln1.w") ==
        (m.config.normalization_type == circuitry::NormalizationType::LN));
  const AttentionOnlyModel<T> back = circuitry::load_model<T>(saved);
  check_same_model(back, m);
}

TEST_CASE("A double model saved as F64 keeps what F32 would round away") {
  auto m = circuitry::load_model<double>(model_path(tiny));
  m.W_E(3, 5) += 1e-12;  // below half an F32 ulp of the entry, well above an F64 ulp
  REQUIRE(static_cast<double>(static_cast<float>(m.W_E(3, 5))) != m.W_E(3, 5));
  const auto f64 = circuitry::load_model<double>(
      SafetensorsFile::from_bytes(circuitry::to_safetensors(m, Dtype::F64).bytes()));
  const auto f32 = circuitry::load_model<double>(
      SafetensorsFile::from_bytes(circuitry::to_safetensors(m, Dtype::F32).bytes()));
  CHECK(f64.W_E(3, 5) == m.W_E(3, 5));
  CHECK(f32.W_E(3, 5) == static_cast<double>(static_cast<float>(m.W_E(3, 5))));
}

TEST_CASE("Biases absent from the file load as zeros") {
  const SafetensorsFile file = SafetensorsFile::open(model_path(tiny));
  const auto full = circuitry::load_model<double>(file);
  Rewrite rewrite;
  rewrite.drop = {"unembed.b_U", "ln_final.b"};
  for (int l = 0; l < full.n_layers(); ++l) {
    const std::string p = "blocks." + std::to_string(l);
    for (const char* b : {".attn.b_Q", ".attn.b_K", ".attn.b_V", ".attn.b_O", ".ln1.b"}) {
      rewrite.drop.insert(p + b);
    }
  }
  SUBCASE("without metadata") {}
  SUBCASE("with metadata") { rewrite.keep_metadata = true; }
  const auto m = circuitry::load_model<double>(rewrite.apply(file, "no_biases"));
  CHECK(m.config == full.config);
  CHECK(m.b_U.isZero(0));
  CHECK((m.ln_final.b.size() == full.config.d_model && m.ln_final.b.isZero(0)));
  for (const auto& id : m.head_ids()) {
    CAPTURE(id.name());
    const auto& h = m.head(id);
    CHECK((h.b_Q.isZero(0) && h.b_K.isZero(0) && h.b_V.isZero(0)));
    CHECK(h.b_Q.size() == full.config.d_head);
    CHECK(same(h.W_Q, full.head(id).W_Q));
  }
  for (const auto& layer : m.layers) CHECK((layer.b_O.isZero(0) && layer.ln1.b.isZero(0)));
  CHECK(same(m.W_U, full.W_U));
}

TEST_CASE("Tensors not in the model (TransformerLens buffers) are ignored") {
  const SafetensorsFile file = SafetensorsFile::open(model_path(tiny));
  const auto plain = circuitry::load_model<float>(file);
  Rewrite rewrite;
  SUBCASE("without metadata") {}
  SUBCASE("with metadata") { rewrite.keep_metadata = true; }
  SafetensorsWriter w = rewrite.writer(file);
  const std::int64_t n = plain.config.n_ctx;
  w.add_integers("blocks.0.attn.mask", {n, n}, std::vector<std::int64_t>(std::size_t(n * n), 1),
                 Dtype::BOOL);
  w.add_raw("blocks.0.attn.IGNORE", Dtype::F32, {}, std::vector<std::uint8_t>(4, 0));
  w.add("blocks.9.mlp.W_in", circuitry::Matrix<float>::Zero(2, 3));
  const auto m = circuitry::load_model<float>(SafetensorsFile::from_bytes(w.bytes()));
  check_same_model(m, plain);
}

TEST_CASE("A file without LayerNorm tensors loads as normalization_type null, or as overridden") {
  const SafetensorsFile file = SafetensorsFile::open(model_path(tiny));
  const ModelConfig ref = reference_config(tiny);
  Rewrite rewrite;
  rewrite.drop = {"ln_final.w", "ln_final.b"};
  for (const char* t : {"w", "b"}) {
    for (int l = 0; l < ref.n_layers; ++l)
      rewrite.drop.insert("blocks." + std::to_string(l) + ".ln1." + t);
  }
  const SafetensorsFile no_ln = rewrite.apply(file, "no_ln");
  CHECK(circuitry::load_model<float>(no_ln).config.normalization_type ==
        circuitry::NormalizationType::none);
  LoadOptions options;
  options.config_overrides = {{"normalization_type", "LNPre"}};
  const auto m = circuitry::load_model<float>(no_ln, options);
  CHECK(m.config.normalization_type == circuitry::NormalizationType::LNPre);
  CHECK((m.layers[0].ln1.type == m.config.normalization_type &&
         m.ln_final.type == m.config.normalization_type));
}

TEST_CASE("float and double loads of an F32 file agree exactly") {
  for (const char* name : model_names) {
    CAPTURE(name);
    const SafetensorsFile file = SafetensorsFile::open(model_path(name));
    const auto f = circuitry::load_model<float>(file);
    const auto d = circuitry::load_model<double>(file);
    check_same_model(d.template cast<float>(), f);
    check_same_model(f.template cast<double>(), d);
  }
}

TEST_CASE("load_model of a missing file is an io_error naming it") {
  const std::string path = "/tmp/circuitry_model_io_missing_" + std::to_string(::getpid());
  CHECK_THROWS_WITH_AS(circuitry::load_model<float>(path), doctest::Contains(path.c_str()),
                       circuitry::io_error);
}

// ---- Hostile files (README, "Robustness") ---------------------------------------------------

TEST_CASE("load_model of a directory, a FIFO or an empty file is an io_error naming it") {
  const TempDir dir;
  CHECK_THROWS_WITH_AS(circuitry::load_model<float>(dir.path.string()),
                       ("[circuitry.io_error] file '" + dir.path.string() +
                        "': is a directory, expected a regular file")
                           .c_str(),
                       circuitry::io_error);
  const std::string fifo = dir.file("model.safetensors");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);  // opening it would block: it must not be opened
  CHECK_THROWS_WITH_AS(
      circuitry::load_model<double>(fifo),
      ("[circuitry.io_error] file '" + fifo + "': is a FIFO, expected a regular file").c_str(),
      circuitry::io_error);
  const std::string empty = dir.file("empty.safetensors");
  std::ofstream(empty).close();
  CHECK_THROWS_WITH_AS(circuitry::load_model<float>(empty),
                       doctest::Contains(("file '" + empty + "': is empty").c_str()),
                       circuitry::io_error);
}

TEST_CASE("A hostile config in the metadata is a config_error naming the file") {
  const SafetensorsFile file = SafetensorsFile::open(model_path(tiny));
  const auto with_config = [&](const std::string& config) {
    Rewrite rewrite;
    SafetensorsWriter w = rewrite.writer(file);
    w.set_metadata("config", config);
    return SafetensorsFile::from_bytes(w.bytes(), "m.safetensors");
  };
  const std::string where = "[circuitry.config_error] file 'm.safetensors': metadata 'config': ";
  SUBCASE("a nesting bomb is refused before parsing") {
    const std::string bomb = "{\"n_layers\": " + std::string(1000000, '[') + "}";
    CHECK_THROWS_WITH_AS(
        circuitry::load_model<float>(with_config(bomb)),
        (where + "not a config: the JSON nests more than 64 levels deep (at byte 76), "
                 "expected an object of keys and values")
            .c_str(),
        circuitry::config_error);
  }
  SUBCASE("a dimension past 2^30, or past 2^64") {
    CHECK_THROWS_WITH_AS(circuitry::load_model<float>(with_config(R"({"d_model": 1073741825})")),
                         (where + "'d_model' must be a positive integer, found 1073741825").c_str(),
                         circuitry::config_error);
    CHECK_THROWS_WITH_AS(
        circuitry::load_model<float>(with_config(R"({"d_vocab": 18446744073709551615})")),
        (where + "'d_vocab' must be a positive integer, found 18446744073709551615").c_str(),
        circuitry::config_error);
    CHECK_THROWS_WITH_AS(
        circuitry::load_model<float>(with_config(R"({"d_vocab": 1e999})")),
        doctest::Contains((where + "not valid JSON (number overflow parsing '1e999')").c_str()),
        circuitry::config_error);
  }
  SUBCASE("a config that is not an object") {
    CHECK_THROWS_WITH_AS(circuitry::load_model<float>(with_config("[2, 8]")),
                         (where + "expected a JSON object, found array").c_str(),
                         circuitry::config_error);
  }
}

TEST_CASE("Every weight is checked for NaN and infinity, the message naming tensor and index") {
  const SafetensorsFile file = SafetensorsFile::open(model_path(tiny));
  // The last element of every tensor the model reads, in turn.
  for (const circuitry::TensorInfo& t : file.tensors()) {
    CAPTURE(t.name);
    Rewrite rewrite;
    rewrite.keep_metadata = true;
    rewrite.edit = [&](const std::string& name, std::vector<std::int64_t>&,
                       std::vector<std::uint8_t>& bytes) {
      if (name == t.name)
        poke_f32(bytes, static_cast<std::int64_t>(bytes.size() / 4) - 1,
                 -std::numeric_limits<float>::infinity());
    };
    const SafetensorsFile bad = rewrite.apply(file, "inf.safetensors");
    CHECK_THROWS_WITH_AS(
        circuitry::load_model<float>(bad),
        doctest::Contains(("tensor '" + t.name + "' holds -inf at index [").c_str()),
        circuitry::numerical_error);
    // ... unless the check is off: then the infinity is loaded as it is.
    LoadOptions unchecked;
    unchecked.check_finite = false;
    CHECK_NOTHROW(circuitry::load_model<float>(bad, unchecked));
  }
}
