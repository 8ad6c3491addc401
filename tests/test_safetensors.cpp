// Tests of circuitry/safetensors.hpp: conversions, writer/reader round trips, the real models,
// and one test per malformed input, each pinning its message.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "circuitry/safetensors.hpp"

using circuitry::Dtype;
using circuitry::SafetensorsFile;
using circuitry::SafetensorsWriter;

namespace {

const std::string tiny_model = CIRCUITRY_MODELS_DIR "/attn-only-tiny.safetensors";

/// A file: 8-byte length `declared` (default: the header's), the header, `data` zero bytes.
std::vector<std::uint8_t> file_with_header(const std::string& header, std::size_t data = 0,
                                           std::uint64_t declared = UINT64_MAX) {
  std::vector<std::uint8_t> bytes(8);
  circuitry::detail::store_le<std::uint64_t>(bytes.data(),
                                             declared == UINT64_MAX ? header.size() : declared);
  for (char c : header) bytes.push_back(static_cast<std::uint8_t>(c));
  bytes.resize(bytes.size() + data, 0);
  return bytes;
}

SafetensorsFile parse(const std::string& header, std::size_t data = 0) {
  return SafetensorsFile::from_bytes(file_with_header(header, data), "bad.safetensors");
}

/// A fresh directory under /tmp, removed with its content at scope exit.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    char name[] = "/tmp/circuitry_safetensors_XXXXXX";
    REQUIRE(::mkdtemp(name) != nullptr);
    path = name;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

template <typename T>
circuitry::Matrix<T> sample_matrix(circuitry::Index rows, circuitry::Index cols, int seed) {
  // k/8 - 3 for small k: exact in F16, BF16, F32 and F64.
  circuitry::Matrix<T> m(rows, cols);
  for (circuitry::Index r = 0; r < rows; ++r) {
    for (circuitry::Index c = 0; c < cols; ++c) {
      m(r, c) = static_cast<T>((seed + 7 * r + 3 * c) % 41) / T(8) - T(3);
    }
  }
  return m;
}

}  // namespace

#define CHECK_FORMAT_ERROR(header, data, message) \
  CHECK_THROWS_WITH_AS(parse(header, data), message, circuitry::format_error)

TEST_CASE("dtype names, sizes and parsing agree") {
  for (Dtype d :
       {Dtype::F64, Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::I64, Dtype::I32, Dtype::I16,
        Dtype::I8, Dtype::U64, Dtype::U32, Dtype::U16, Dtype::U8, Dtype::BOOL}) {
    CAPTURE(circuitry::to_string(d));
    CHECK(circuitry::parse_dtype(circuitry::to_string(d)) == d);
    CHECK(circuitry::is_floating(d) != circuitry::is_integer(d));
  }
  CHECK(circuitry::dtype_size(Dtype::BF16) == 2);
  CHECK(circuitry::dtype_size(Dtype::F64) == 8);
  CHECK(circuitry::dtype_size(Dtype::BOOL) == 1);
  CHECK_THROWS_WITH_AS(circuitry::parse_dtype("f32", "ctx"),
                       "[circuitry.format_error] ctx: unknown dtype 'f32' (expected one of F64, "
                       "F32, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8, BOOL)",
                       circuitry::format_error);
}

TEST_CASE("fp16 bit patterns decode exactly") {
  using circuitry::detail::half_to_float;
  CHECK(half_to_float(0x3C00) == 1.0f);
  CHECK(half_to_float(0xC000) == -2.0f);
  CHECK(half_to_float(0x7BFF) == 65504.0f);
  CHECK(half_to_float(0x0001) == std::ldexp(1.0f, -24));          // smallest subnormal
  CHECK(half_to_float(0x03FF) == std::ldexp(1023.0f, -24));       // largest subnormal
  CHECK(half_to_float(0x0400) == std::ldexp(1.0f, -14));          // smallest normal
  CHECK(half_to_float(0x3555) == 0.25f * (1 + 0x155 / 1024.0f));  // 0.33325195
  CHECK(half_to_float(0x7C00) == std::numeric_limits<float>::infinity());
  CHECK(half_to_float(0xFC00) == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(half_to_float(0x7E00)));
  CHECK(std::isnan(half_to_float(0x7C01)));
  CHECK(std::signbit(half_to_float(0x8000)));
  CHECK(half_to_float(0x8000) == 0.0f);
}

TEST_CASE("bf16 bit patterns decode exactly") {
  using circuitry::detail::bf16_to_float;
  CHECK(bf16_to_float(0x3F80) == 1.0f);
  CHECK(bf16_to_float(0xC000) == -2.0f);
  CHECK(bf16_to_float(0x7F7F) == std::ldexp(255.0f, 120));  // largest finite
  CHECK(bf16_to_float(0x0001) == std::ldexp(1.0f, -133));   // smallest subnormal
  CHECK(bf16_to_float(0x7F80) == std::numeric_limits<float>::infinity());
  CHECK(std::isnan(bf16_to_float(0x7FC0)));
}

TEST_CASE("fp16 and bf16 encoding inverts decoding for every non-NaN bit pattern") {
  using namespace circuitry::detail;
  int half_mismatches = 0;
  int bf16_mismatches = 0;
  for (std::uint32_t h = 0; h <= 0xFFFF; ++h) {
    const auto bits = static_cast<std::uint16_t>(h);
    const float x = half_to_float(bits);
    const float y = bf16_to_float(bits);
    if (!std::isnan(x) && float_to_half(x) != bits) ++half_mismatches;
    if (!std::isnan(y) && float_to_bf16(y) != bits) ++bf16_mismatches;
  }
  CHECK(half_mismatches == 0);
  CHECK(bf16_mismatches == 0);
}

TEST_CASE("fp16 and bf16 encoding round to nearest, ties to even, and overflow to infinity") {
  using namespace circuitry::detail;
  CHECK(float_to_half(65519.0) == 0x7BFF);
  CHECK(float_to_half(65520.0) == 0x7C00);  // halfway to 2^16: infinity
  CHECK(float_to_half(1e300) == 0x7C00);
  CHECK(float_to_half(1.0 + std::ldexp(1.0, -11)) == 0x3C00);  // tie: even mantissa
  CHECK(float_to_half(1.0 + 3 * std::ldexp(1.0, -11)) == 0x3C02);
  CHECK(float_to_half(std::ldexp(1.0, -25)) == 0x0000);  // tie between 0 and 2^-24
  CHECK(float_to_half(std::ldexp(1.5, -25)) == 0x0001);
  CHECK(float_to_half(-0.0) == 0x8000);
  CHECK(std::isnan(half_to_float(float_to_half(std::nan("")))));
  CHECK(float_to_bf16(1.0 + std::ldexp(1.0, -8)) == 0x3F80);  // tie: even mantissa
  CHECK(float_to_bf16(1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -30)) == 0x3F81);
  CHECK(float_to_bf16(std::ldexp(1.0, 200)) == 0x7F80);
  CHECK(std::isnan(bf16_to_float(float_to_bf16(std::nan("")))));
}

TEST_CASE_TEMPLATE("writing then reading gives back matrices, vectors and stacks exactly", T, float,
                   double) {
  for (Dtype dtype : {Dtype::F32, Dtype::F64, Dtype::F16, Dtype::BF16}) {
    CAPTURE(circuitry::to_string(dtype));
    const circuitry::Matrix<T> m = sample_matrix<T>(3, 5, 1);
    const circuitry::Vector<T> v = sample_matrix<T>(7, 1, 2);
    const std::vector<circuitry::Matrix<T>> stack{
        sample_matrix<T>(2, 4, 3), sample_matrix<T>(2, 4, 4), sample_matrix<T>(2, 4, 5)};
    SafetensorsWriter w;
    w.add("m", m, dtype);
    w.add("v", v, dtype);
    w.add("m_times_2", m * T(2), dtype);  // an expression is evaluated first
    w.add_stack("stack", stack, dtype);
    const auto file = SafetensorsFile::from_bytes(w.bytes());
    CHECK(file.info("m").dtype == dtype);
    CHECK(file.info("m").shape == std::vector<std::int64_t>{3, 5});
    CHECK(file.info("v").shape == std::vector<std::int64_t>{7});
    CHECK(file.info("stack").shape == std::vector<std::int64_t>{3, 2, 4});
    CHECK(file.matrix<T>("m", 3, 5) == m);
    CHECK(file.matrix<T>("m_times_2", 3, 5) == m * T(2));
    CHECK(file.vector<T>("v", 7) == v);
    const auto read = file.matrices<T>("stack", 3, 2, 4);
    REQUIRE(read.size() == 3);
    for (std::size_t i = 0; i < 3; ++i) CHECK(read[i] == stack[i]);
    const std::vector<T> flat = file.values<T>("m");
    REQUIRE(flat.size() == 15);
    CHECK(flat[1 * 5 + 4] == m(1, 4));  // row-major
  }
}

TEST_CASE("the writer pads the header to 8 bytes with spaces and is deterministic") {
  SafetensorsWriter w;
  w.add("a", circuitry::Vector<float>::Constant(2, 1.5f));
  const std::vector<std::uint8_t> bytes = w.bytes();
  const std::string header(bytes.begin() + 8, bytes.end() - 8);
  CHECK(header == R"({"a":{"data_offsets":[0,8],"dtype":"F32","shape":[2]}}  )");
  CHECK(circuitry::detail::load_le<std::uint64_t>(bytes.data()) == header.size());
  CHECK(header.size() % 8 == 0);
  CHECK(w.bytes() == bytes);
}

TEST_CASE("metadata and integer tensors survive a round trip") {
  SafetensorsWriter w;
  w.set_metadata("config", R"({"n_layers": 2})");
  w.set_metadata("format", "pt");
  w.add_integers("tokens", {2, 3}, {0, 1, -2, 3, 4095, -4096}, Dtype::I32);
  w.add_integers("i64", {2}, {INT64_MIN, INT64_MAX});
  w.add_integers("bytes", {3}, {0, 200, 255}, Dtype::U8);
  w.add_integers("mask", {3}, {1, 0, 1}, Dtype::BOOL);
  const auto file = SafetensorsFile::from_bytes(w.bytes());
  CHECK(file.metadata().size() == 2);
  CHECK(file.metadata().at("format") == "pt");
  CHECK(nlohmann::json::parse(file.metadata().at("config"))["n_layers"] == 2);
  CHECK(file.integers("tokens") == std::vector<std::int64_t>{0, 1, -2, 3, 4095, -4096});
  CHECK(file.integers("i64") == std::vector<std::int64_t>{INT64_MIN, INT64_MAX});
  CHECK(file.integers("bytes") == std::vector<std::int64_t>{0, 200, 255});
  CHECK(file.integers("mask") == std::vector<std::int64_t>{1, 0, 1});
  CHECK(file.names() == std::vector<std::string>{"tokens", "i64", "bytes", "mask"});
  CHECK_THROWS_WITH_AS(file.values<float>("tokens"),
                       "[circuitry.format_error] file '<memory>': tensor 'tokens' has dtype I32, "
                       "expected a floating dtype (F64, F32, F16, BF16)",
                       circuitry::format_error);
}

TEST_CASE("a file written to disk opens memory-mapped, and survives a move") {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  const circuitry::Matrix<double> m = sample_matrix<double>(4, 3, 9);
  SafetensorsWriter w;
  w.add("embed.W_E", m, Dtype::F64);
  w.write(path);
  SafetensorsFile file = SafetensorsFile::open(path);
  CHECK(file.path() == path);
  const SafetensorsFile moved = std::move(file);
  CHECK(moved.matrix<double>("embed.W_E", 4, 3) == m);
  CHECK_THROWS_WITH_AS(moved.matrix<double>("embed.W_E", 4, 4),
                       ("[circuitry.shape_error] file '" + path +
                        "': tensor 'embed.W_E' has shape [4, 3], expected [4, 4]")
                           .c_str(),
                       circuitry::shape_error);
}

TEST_CASE("tensor data at an unaligned offset is read correctly") {
  // A 5-byte header-padding-free file puts the data section at byte 8 + 61: odd.
  std::string header = R"({"x":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}})";
  header += std::string(61 - header.size(), ' ');
  std::vector<std::uint8_t> bytes = file_with_header(header, 16);
  circuitry::detail::store_le(bytes.data() + 8 + 61, 0.25);
  circuitry::detail::store_le(bytes.data() + 8 + 69, -1e300);
  const auto file = SafetensorsFile::from_bytes(std::move(bytes));
  CHECK(file.values<double>("x") == std::vector<double>{0.25, -1e300});
  CHECK(file.vector<float>("x", 2)(1) == -std::numeric_limits<float>::infinity());
}

TEST_CASE("the tiny model reads with its shapes, metadata and row-major layout") {
  const auto file = SafetensorsFile::open(tiny_model);
  CHECK(file.size() == 26);
  CHECK(file.names().front() == "blocks.0.attn.W_K");  // data-offset order
  const circuitry::TensorInfo& W_E = file.info("embed.W_E");
  CHECK(W_E.dtype == Dtype::F32);
  CHECK(W_E.shape == std::vector<std::int64_t>{4096, 64});
  CHECK(W_E.numel() == 4096 * 64);
  CHECK(file.info("blocks.0.attn.W_Q").shape == std::vector<std::int64_t>{4, 64, 16});
  const auto config = nlohmann::json::parse(file.metadata().at("config"));
  CHECK(config["d_model"] == 64);
  CHECK(config["n_layers"] == 2);

  const circuitry::Matrix<float> E = file.matrix<float>("embed.W_E", 4096, 64);
  const std::vector<float> flat = file.values<float>("embed.W_E");
  CHECK(E(3, 5) == flat[3 * 64 + 5]);
  CHECK(E(3, 5) == -0.043287646025419235f);  // read independently with Python's struct
  CHECK(E(4095, 63) == flat.back());
  const auto W_Q = file.matrices<double>("blocks.0.attn.W_Q", 4, 64, 16);
  CHECK(W_Q[2](10, 7) == static_cast<double>(-0.11407015472650528f));
  CHECK(W_Q[2](10, 7) == file.values<double>("blocks.0.attn.W_Q")[(2 * 64 + 10) * 16 + 7]);
  CHECK(file.vector<float>("unembed.b_U", 4096)(4095) == -0.10723292082548141f);
  for (const auto& name : file.names()) CHECK_NOTHROW(file.check_finite(name));

  CHECK_THROWS_WITH_AS(file.matrix<float>("embed.W_E", 4096, 256),
                       ("[circuitry.shape_error] file '" + tiny_model +
                        "': tensor 'embed.W_E' has shape [4096, 64], expected [4096, 256]")
                           .c_str(),
                       circuitry::shape_error);
  CHECK_THROWS_WITH_AS(
      file.info("embed.W_X"),
      ("[circuitry.format_error] file '" + tiny_model + "': tensor 'embed.W_X' not found").c_str(),
      circuitry::format_error);
  CHECK(!file.contains("embed.W_X"));
  CHECK(file.contains("embed.W_E"));
}

TEST_CASE("the other example models open and hold finite weights") {
  for (const char* name : {"attn-only-1l", "attn-only-2l"}) {
    CAPTURE(name);
    const auto file =
        SafetensorsFile::open(std::string(CIRCUITRY_MODELS_DIR "/") + name + ".safetensors");
    CHECK(file.info("embed.W_E").shape == std::vector<std::int64_t>{4096, 256});
    CHECK(file.matrices<float>("blocks.0.attn.W_O", 8, 32, 256).size() == 8);
    CHECK_NOTHROW(file.check_finite("unembed.W_U"));
  }
}

TEST_CASE("check_finite names the tensor and the index of the first NaN or infinity") {
  circuitry::Matrix<float> m = circuitry::Matrix<float>::Zero(2, 3);
  m(1, 2) = std::numeric_limits<float>::quiet_NaN();
  m(1, 1) = -std::numeric_limits<float>::infinity();
  SafetensorsWriter w;
  w.add("w", m, Dtype::BF16);
  const auto file = SafetensorsFile::from_bytes(w.bytes(), "m.safetensors");
  CHECK_THROWS_WITH_AS(file.check_finite("w"),
                       "[circuitry.numerical_error] file 'm.safetensors': tensor 'w' holds -inf "
                       "at index [1, 1] (flat 4)",
                       circuitry::numerical_error);
}

TEST_CASE("integers() rejects floating tensors and U64 values past int64") {
  SafetensorsWriter w;
  w.add("f", circuitry::Vector<float>::Zero(1));
  w.add_raw("u", Dtype::U64, {1}, std::vector<std::uint8_t>(8, 0xFF));
  const auto file = SafetensorsFile::from_bytes(w.bytes());
  CHECK_THROWS_WITH_AS(file.integers("f"),
                       "[circuitry.format_error] file '<memory>': tensor 'f' has dtype F32, "
                       "expected an integer dtype (I64, I32, I16, I8, U64, U32, U16, U8, BOOL)",
                       circuitry::format_error);
  CHECK_THROWS_WITH_AS(file.integers("u"),
                       "[circuitry.format_error] file '<memory>': tensor 'u': U64 element 0 is "
                       "18446744073709551615, more than std::int64_t holds",
                       circuitry::format_error);
}

TEST_CASE("the writer rejects bad arguments") {
  SafetensorsWriter w;
  w.add("a", circuitry::Vector<float>::Zero(2));
  CHECK_THROWS_WITH_AS(w.add("a", circuitry::Vector<float>::Zero(2)),
                       "[circuitry.argument_error] SafetensorsWriter: tensor 'a': added twice",
                       circuitry::argument_error);
  CHECK_THROWS_AS(w.add("__metadata__", circuitry::Vector<float>::Zero(2)),
                  circuitry::argument_error);
  CHECK_THROWS_WITH_AS(w.add("b", circuitry::Vector<float>::Zero(2), Dtype::I32),
                       doctest::Contains("add writes floating dtypes, not I32"),
                       circuitry::argument_error);
  CHECK_THROWS_WITH_AS(w.add_raw("c", Dtype::F32, {3}, std::vector<std::uint8_t>(8)),
                       "[circuitry.argument_error] SafetensorsWriter: tensor 'c': 8 bytes given, "
                       "but F32 shape [3] needs 12",
                       circuitry::argument_error);
  CHECK_THROWS_AS(w.add_integers("d", {1}, {300}, Dtype::U8), circuitry::argument_error);
  const std::vector<circuitry::Matrix<float>> ragged{circuitry::Matrix<float>::Zero(2, 2),
                                                     circuitry::Matrix<float>::Zero(2, 3)};
  CHECK_THROWS_WITH_AS(w.add_stack("e", ragged), doctest::Contains("matrix 1 is 2 x 3"),
                       circuitry::shape_error);
}

// ---- Paths that are not safetensors files -------------------------------------------------

TEST_CASE("opening a missing file, a directory, a FIFO or an empty file throws io_error") {
  TempDir dir;
  const std::string missing = dir.file("missing.safetensors");
  CHECK_THROWS_WITH_AS(
      SafetensorsFile::open(missing),
      ("[circuitry.io_error] file '" + missing + "': cannot open: No such file or directory")
          .c_str(),
      circuitry::io_error);
  CHECK_THROWS_WITH_AS(SafetensorsFile::open(dir.path.string()),
                       ("[circuitry.io_error] file '" + dir.path.string() +
                        "': is a directory, expected a regular file")
                           .c_str(),
                       circuitry::io_error);
  const std::string fifo = dir.file("fifo");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_THROWS_WITH_AS(
      SafetensorsFile::open(fifo),
      ("[circuitry.io_error] file '" + fifo + "': is a FIFO, expected a regular file").c_str(),
      circuitry::io_error);
  const std::string empty = dir.file("empty.safetensors");
  std::ofstream(empty).close();
  CHECK_THROWS_WITH_AS(SafetensorsFile::open(empty),
                       doctest::Contains(("file '" + empty + "': is empty, expected").c_str()),
                       circuitry::io_error);
  CHECK_THROWS_AS(SafetensorsFile::from_bytes({}), circuitry::io_error);
}

// ---- Malformed files: one test each, message pinned ----------------------------------------

#define BAD "[circuitry.format_error] file 'bad.safetensors': "

TEST_CASE("a file shorter than the 8-byte header length is rejected") {
  CHECK_THROWS_WITH_AS(SafetensorsFile::from_bytes({1, 2, 3}, "bad.safetensors"),
                       BAD "is 3 bytes long, shorter than the 8-byte header length",
                       circuitry::format_error);
}

TEST_CASE("a header length past the end of the file is rejected") {
  CHECK_THROWS_WITH_AS(
      SafetensorsFile::from_bytes(file_with_header("{}", 0, 1000), "bad.safetensors"),
      BAD "header length 1000 exceeds the 2 bytes after the 8-byte length",
      circuitry::format_error);
}

TEST_CASE("a header length over the 100 MB cap is rejected before allocating") {
  CHECK_THROWS_WITH_AS(
      SafetensorsFile::from_bytes(file_with_header("{}", 0, UINT64_MAX - 1), "bad.safetensors"),
      BAD "header length 18446744073709551614 exceeds the limit of 100000000 bytes",
      circuitry::format_error);
  CHECK_THROWS_WITH_AS(
      SafetensorsFile::from_bytes(file_with_header("{}", 0, 100000001), "bad.safetensors"),
      BAD "header length 100000001 exceeds the limit of 100000000 bytes", circuitry::format_error);
  // The cap itself is allowed: this one fails only because the file is shorter.
  CHECK_THROWS_WITH_AS(
      SafetensorsFile::from_bytes(file_with_header("{}", 0, 100000000), "bad.safetensors"),
      BAD "header length 100000000 exceeds the 2 bytes after the 8-byte length",
      circuitry::format_error);
}

TEST_CASE("a file of zero bytes past the length, or of zeros only, is rejected") {
  CHECK_THROWS_WITH_AS(
      SafetensorsFile::from_bytes(std::vector<std::uint8_t>(8, 0), "bad.safetensors"),
      doctest::Contains(BAD "header is not valid JSON: parse error"), circuitry::format_error);
  CHECK_THROWS_WITH_AS(
      SafetensorsFile::from_bytes(std::vector<std::uint8_t>(64, 0), "bad.safetensors"),
      doctest::Contains(BAD "header is not valid JSON"), circuitry::format_error);
}

TEST_CASE("a header that is not JSON is rejected with the parser's position") {
  CHECK_FORMAT_ERROR("{oops}", 0,
                     doctest::Contains(BAD "header is not valid JSON: parse error at line 1, "
                                           "column 2: syntax error while parsing object key"));
  CHECK_FORMAT_ERROR("", 0, doctest::Contains(BAD "header is not valid JSON: parse error"));
  CHECK_FORMAT_ERROR("{} x", 0, doctest::Contains(BAD "header is not valid JSON: parse error"));
  CHECK_FORMAT_ERROR("{\"\xff\": 1}", 0, doctest::Contains("invalid string: ill-formed UTF-8"));
  CHECK_FORMAT_ERROR(R"({"a":{"dtype":"F32","shape":[1e500],"data_offsets":[0,4]}})", 4,
                     doctest::Contains(BAD "header is not valid JSON: number overflow"));
}

TEST_CASE("a deeply nested header is rejected before parsing") {
  const std::string bomb = "{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  CHECK_FORMAT_ERROR(bomb, 0,
                     BAD
                     "header nests more than 64 levels deep (at byte 68 of the header), "
                     "expected 3 levels");
  // Objects count as much as arrays; a million levels are rejected as fast as 65.
  std::string objects;
  for (int i = 0; i < 1000000; ++i) objects += "{\"a\":";
  CHECK_FORMAT_ERROR(objects, 0,
                     BAD
                     "header nests more than 64 levels deep (at byte 320 of the header), "
                     "expected 3 levels");
  // Brackets inside strings do not count.
  CHECK_NOTHROW(parse(R"({"__metadata__":{"k":")" + std::string(1000, '[') + R"(\""}})"));
  // The limit is 64 levels: the 65th opening bracket is the one reported.
  const std::string deep = std::string(64, '[') + std::string(64, ']');
  CHECK(circuitry::detail::json_too_deep_at(deep.data(), deep.data() + deep.size()) ==
        std::string::npos);
  const std::string deeper = "[" + deep + "]";
  CHECK(circuitry::detail::json_too_deep_at(deeper.data(), deeper.data() + deeper.size()) == 64);
}

TEST_CASE("a header that is not an object is rejected") {
  CHECK_FORMAT_ERROR("[1, 2]", 0,
                     BAD "header is array, expected an object mapping tensor names to entries");
}

TEST_CASE("an entry that is not an object, or lacks a field, is rejected") {
  CHECK_FORMAT_ERROR(R"({"a": 3})", 0,
                     BAD
                     "tensor 'a': entry is number, expected an object with dtype, shape "
                     "and data_offsets");
  CHECK_FORMAT_ERROR(R"({"a": {"shape": [1], "data_offsets": [0, 4]}})", 4,
                     BAD
                     "tensor 'a': entry has no 'dtype', expected an object with dtype, "
                     "shape and data_offsets");
  CHECK_FORMAT_ERROR(R"({"a": {"dtype": "F32", "data_offsets": [0, 4]}})", 4,
                     doctest::Contains("tensor 'a': entry has no 'shape'"));
  CHECK_FORMAT_ERROR(R"({"a": {"dtype": "F32", "shape": [1]}})", 4,
                     doctest::Contains("tensor 'a': entry has no 'data_offsets'"));
}

TEST_CASE("an unknown or non-string dtype is rejected") {
  CHECK_FORMAT_ERROR(R"({"a": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 4]}})", 4,
                     BAD
                     "tensor 'a': unknown dtype 'Q7' (expected one of F64, F32, F16, BF16, "
                     "I64, I32, I16, I8, U64, U32, U16, U8, BOOL)");
  CHECK_FORMAT_ERROR(R"({"a": {"dtype": 32, "shape": [1], "data_offsets": [0, 4]}})", 4,
                     BAD "tensor 'a': dtype is number, expected a string");
}

TEST_CASE("a negative, fractional or non-array shape is rejected") {
  CHECK_FORMAT_ERROR(R"({"a": {"dtype": "F32", "shape": [1, -3], "data_offsets": [0, 4]}})", 4,
                     BAD "tensor 'a': shape[1] is -3, expected a non-negative integer");
  CHECK_FORMAT_ERROR(R"({"a": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 4]}})", 4,
                     BAD "tensor 'a': shape[0] is 2.5, expected a non-negative integer");
  CHECK_FORMAT_ERROR(R"({"a": {"dtype": "F32", "shape": "1", "data_offsets": [0, 4]}})", 4,
                     BAD
                     "tensor 'a': shape is string, expected an array of non-negative "
                     "integers");
  CHECK_FORMAT_ERROR(
      R"({"a": {"dtype": "F32", "shape": [9223372036854775808], "data_offsets": [0, 4]}})", 4,
      BAD "tensor 'a': shape[0] is 9223372036854775808, larger than 2^63 - 1");
}

TEST_CASE("a shape whose element count overflows 64 bits is rejected") {
  CHECK_FORMAT_ERROR(
      R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}})", 4,
      BAD "tensor 'a': shape [4294967296, 4294967296] has more elements than 64 bits can count");
  // The element count fits, but not times the dtype size (2^62 F64 elements: 2^65 bytes).
  CHECK_FORMAT_ERROR(
      R"({"a": {"dtype": "F64", "shape": [4611686018427387904], "data_offsets": [0, 0]}})", 0,
      BAD
      "tensor 'a': data_offsets [0, 0) hold 0 bytes, but shape [4611686018427387904] of F64 "
      "needs more than 2^64");
  // ... unless a zero dimension makes the tensor empty.
  const auto file = parse(
      R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296, 0], "data_offsets": [0, 0]}})");
  CHECK(file.values<float>("a").empty());
}

TEST_CASE("malformed data_offsets are rejected") {
  CHECK_FORMAT_ERROR(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", 4,
                     BAD
                     "tensor 'a': data_offsets is [0], expected [begin, end], two "
                     "non-negative integers");
  CHECK_FORMAT_ERROR(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}})", 4,
                     BAD "tensor 'a': data_offsets[0] is -4, expected a non-negative integer");
  CHECK_FORMAT_ERROR(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4.0]}})", 4,
                     BAD "tensor 'a': data_offsets[1] is 4.0, expected a non-negative integer");
}

TEST_CASE("data_offsets that overflow 64 bits, or ending past the file, are rejected") {
  // 2^64 does not fit an integer: JSON gives a float.
  CHECK_FORMAT_ERROR(
      R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 18446744073709551616]}})", 4,
      BAD "tensor 'a': data_offsets[1] is 1.8446744073709552e+19, expected a non-negative integer");
  CHECK_FORMAT_ERROR(
      R"({"a": {"dtype": "U8", "shape": [1], "data_offsets": [18446744073709551614, 18446744073709551615]}})",
      4,
      BAD
      "tensor 'a': data_offsets [18446744073709551614, 18446744073709551615) end past the 4-byte "
      "data section");
  CHECK_FORMAT_ERROR(
      R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [-9223372036854775809, 4]}})", 4,
      BAD "tensor 'a': data_offsets[0] is -9.223372036854776e+18, expected a non-negative integer");
}

TEST_CASE("data_offsets with begin after end are rejected") {
  CHECK_FORMAT_ERROR(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}})", 8,
                     BAD "tensor 'a': data_offsets [8, 4) begin after end");
}

TEST_CASE("data_offsets ending past the data section are rejected") {
  CHECK_FORMAT_ERROR(R"({"a": {"dtype": "F32", "shape": [16], "data_offsets": [0, 64]}})", 32,
                     BAD "tensor 'a': data_offsets [0, 64) end past the 32-byte data section");
}

TEST_CASE("a byte size other than numel times the dtype size is rejected") {
  CHECK_FORMAT_ERROR(R"({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}})", 16,
                     BAD
                     "tensor 'a': data_offsets [0, 12) hold 12 bytes, but shape [2, 2] of "
                     "F32 needs 16");
}

TEST_CASE("overlapping tensors are rejected") {
  CHECK_FORMAT_ERROR(R"({"b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
                         "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})",
                     24, BAD "tensors 'a' at [0, 16) and 'b' at [8, 24) overlap");
  // The same range twice, and one range inside another.
  CHECK_FORMAT_ERROR(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                         "b": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]}})",
                     8, BAD "tensors 'a' at [0, 8) and 'b' at [0, 8) overlap");
  CHECK_FORMAT_ERROR(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                         "b": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]},
                         "c": {"dtype": "U8", "shape": [4], "data_offsets": [12, 16]}})",
                     16, BAD "tensors 'a' at [0, 16) and 'b' at [4, 8) overlap");
  // Gaps, trailing bytes and empty tensors are fine.
  const auto file = parse(R"({"b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]},
                              "e": {"dtype": "F32", "shape": [0], "data_offsets": [9, 9]},
                              "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})",
                          32);
  CHECK(file.names() == std::vector<std::string>{"a", "b", "e"});
}

TEST_CASE("duplicate tensor names and duplicate keys are rejected") {
  CHECK_FORMAT_ERROR(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                         "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                     8, BAD "duplicate tensor 'a' in the header");
  CHECK_FORMAT_ERROR(R"({"a": {"dtype": "F32", "dtype": "F64", "shape": [1],
                               "data_offsets": [0, 4]}})",
                     8, BAD "duplicate key 'dtype' in the header");
  CHECK_FORMAT_ERROR(R"({"__metadata__": {}, "__metadata__": {}})", 0,
                     BAD "duplicate key '__metadata__' in the header");
}

TEST_CASE("__metadata__ that is not an object of strings is rejected") {
  CHECK_FORMAT_ERROR(R"({"__metadata__": [1]})", 0,
                     BAD "__metadata__ is array, expected an object of strings");
  CHECK_FORMAT_ERROR(R"({"__metadata__": {"n_layers": 2}})", 0,
                     BAD "__metadata__ key 'n_layers' holds number, expected a string");
}

TEST_CASE("truncations of a valid file never crash, and each throws a typed error") {
  SafetensorsWriter w;
  w.set_metadata("k", "v");
  w.add("m", sample_matrix<float>(3, 4, 0), Dtype::F16);
  w.add("v", sample_matrix<double>(5, 1, 0), Dtype::F64);
  const std::vector<std::uint8_t> bytes = w.bytes();
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    CAPTURE(n);
    CHECK_THROWS_AS(SafetensorsFile::from_bytes({bytes.data(), bytes.data() + n}),
                    circuitry::error);
  }
  CHECK_NOTHROW(SafetensorsFile::from_bytes(bytes));
}
