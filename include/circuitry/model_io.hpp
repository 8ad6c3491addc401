// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file model_io.hpp
/// Loading and saving attention-only models in TransformerLens's state-dict naming, as
/// safetensors:
///
///     embed.W_E [d_vocab, d_model]            pos_embed.W_pos [n_ctx, d_model]
///     blocks.{l}.ln1.w / .b [d_model]         ln_final.w / .b [d_model]
///     blocks.{l}.attn.W_Q / W_K / W_V [n_heads, d_model, d_head]
///     blocks.{l}.attn.W_O [n_heads, d_head, d_model]
///     blocks.{l}.attn.b_Q / b_K / b_V [n_heads, d_head]     blocks.{l}.attn.b_O [d_model]
///     unembed.W_U [d_model, d_vocab]          unembed.b_U [d_vocab]
///
/// The config comes, in order of precedence, from `LoadOptions::config` (a complete config), else
/// the file's `config` metadata (a JSON string), else the tensor names and shapes; then
/// `LoadOptions::config_overrides` is applied on top. Read off the weights: n_layers (the
/// blocks present), n_heads, d_model, d_head (W_Q), d_vocab (W_E), n_ctx (W_pos), and
/// normalization_type ("LN" when ln1.w is present, otherwise null: a TransformerLens export whose
/// LayerNorm weights were folded must say `"normalization_type": "LNPre"`). The positional
/// embedding type cannot be read off the weights: it defaults to "standard", and a
/// shortformer model must say so. Biases absent from the file are zero. Tensors not named above
/// (TransformerLens's `attn.mask`, `attn.IGNORE` buffers) are ignored.
///
/// Example:
///
///     auto model = circuitry::load_model<double>("attn-only-2l.safetensors");
///     circuitry::process_weights(model);   // as TransformerLens's from_pretrained does

#include <optional>
#include <string>

#include "circuitry/model.hpp"
#include "circuitry/safetensors.hpp"

namespace circuitry {

/// How `load_model` builds the config and checks the weights.
struct LoadOptions {
  std::optional<ModelConfig> config;  ///< a complete config that replaces the file's
  nlohmann::json config_overrides = nlohmann::json::object();  ///< keys applied on top
  bool check_finite = true;  ///< reject NaN / infinite weights (numerical_error)
};

namespace detail {

inline std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

/// Reads the config of a TransformerLens safetensors file (see model_io.hpp). `explicit_config`
/// is set when the config came from metadata or the user, so that a disagreement with the
/// weights is a config_error rather than a shape_error.
inline ModelConfig infer_config(const SafetensorsFile& file, const LoadOptions& options,
                                bool& explicit_config) {
  const std::string ctx = "file '" + file.path() + "'";
  ModelConfig c;
  explicit_config = false;
  if (options.config) {
    c = *options.config;
    explicit_config = true;
  } else if (auto it = file.metadata().find("config"); it != file.metadata().end()) {
    apply_config_json(c, parse_config_text(it->second, ctx + ": metadata 'config'"),
                      ctx + ": metadata 'config'");
    explicit_config = true;
  } else {
    auto dim = [&](const std::string& name, std::size_t rank, std::size_t axis) {
      const TensorInfo& info = file.info(name);
      if (info.shape.size() != rank) {
        throw shape_error(ctx + ": tensor '" + name + "' has shape " + shape_string(info.shape) +
                          ", expected " + std::to_string(rank) + " dimensions");
      }
      const std::int64_t v = info.shape[axis];
      if (v <= 0 || v > (1LL << 30)) {
        throw shape_error(ctx + ": tensor '" + name + "' has shape " + shape_string(info.shape) +
                          ": dimensions must be positive");
      }
      return static_cast<int>(v);
    };
    int n_layers = 0;
    while (file.contains("blocks." + std::to_string(n_layers) + ".attn.W_Q")) ++n_layers;
    if (n_layers == 0) {
      throw format_error(ctx +
                         ": tensor 'blocks.0.attn.W_Q' not found: not a TransformerLens "
                         "attention-only model");
    }
    c.n_layers = n_layers;
    c.n_heads = dim("blocks.0.attn.W_Q", 3, 0);
    c.d_model = dim("blocks.0.attn.W_Q", 3, 1);
    c.d_head = dim("blocks.0.attn.W_Q", 3, 2);
    c.d_vocab = dim("embed.W_E", 2, 0);
    c.n_ctx = dim("pos_embed.W_pos", 2, 0);
    c.normalization_type =
        file.contains("blocks.0.ln1.w") ? NormalizationType::LN : NormalizationType::none;
  }
  if (!options.config_overrides.is_null() && !options.config_overrides.empty()) {
    apply_config_json(c, options.config_overrides, ctx + ": config overrides");
    explicit_config = true;
  }
  c.validate(ctx + ": config");
  const std::string last = "blocks." + std::to_string(c.n_layers - 1) + ".attn.W_Q";
  if (!file.contains(last)) {
    throw config_error(ctx + ": config says n_layers = " + std::to_string(c.n_layers) +
                       " but the file has no tensor '" + last + "'");
  }
  if (file.contains("blocks." + std::to_string(c.n_layers) + ".attn.W_Q")) {
    throw config_error(ctx + ": config says n_layers = " + std::to_string(c.n_layers) +
                       " but the file has tensor 'blocks." + std::to_string(c.n_layers) +
                       ".attn.W_Q'");
  }
  return c;
}

/// Checks tensor `name` has `expected` shape; the error names the config fields the shape comes
/// from.
inline void expect_tensor_shape(const SafetensorsFile& file, const std::string& name,
                                const std::vector<std::int64_t>& expected, const std::string& dims,
                                bool explicit_config) {
  if (!file.contains(name)) {
    throw format_error("file '" + file.path() + "': tensor '" + name + "' not found (expected " +
                       shape_string(expected) + " = " + dims + ")");
  }
  const auto& found = file.info(name).shape;
  if (found != expected) {
    const std::string msg = "file '" + file.path() + "': tensor '" + name + "' has shape " +
                            shape_string(found) + ", expected " + shape_string(expected) + " = " +
                            dims;
    if (explicit_config)
      throw config_error(msg + " from the config: the config contradicts the weights");
    throw shape_error(msg);
  }
}

/// Throws numerical_error at the first NaN or infinity of `m`, slice `slice` of tensor `name`
/// (`slice` < 0 for a matrix or vector that is the whole tensor), naming its index in the
/// tensor's own coordinates: [r] for a vector, [r, c] for a matrix, [slice, r, c] for a slice of
/// a stacked [n_heads, rows, cols] tensor.
template <typename Derived>
void expect_finite(const Eigen::MatrixBase<Derived>& m, const std::string& file,
                   const std::string& name, Index slice = -1) {
  for (Index j = 0; j < m.cols(); ++j) {
    for (Index i = 0; i < m.rows(); ++i) {
      const double v = static_cast<double>(m(i, j));
      if (std::isfinite(v)) continue;
      std::string index = "[";
      if (slice >= 0) index += std::to_string(slice) + ", ";
      index += std::to_string(i);
      if (Derived::ColsAtCompileTime != 1) index += ", " + std::to_string(j);
      throw numerical_error("file '" + file + "': tensor '" + name + "' holds " +
                            (std::isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf")) + " at index " +
                            index + "]");
    }
  }
}

}  // namespace detail

/// Loads an attention-only model from an open safetensors file (see model_io.hpp for the
/// naming and how the config is found). Throws format_error (missing tensor), shape_error (a
/// tensor's shape disagrees with the inferred config), config_error (an explicit config
/// contradicts the weights), numerical_error (NaN or infinite weights).
template <typename Scalar>
AttentionOnlyModel<Scalar> load_model(const SafetensorsFile& file,
                                      const LoadOptions& options = {}) {
  CIRCUITRY_STATIC_ASSERT_SCALAR(Scalar);
  using std::int64_t;
  bool explicit_config = false;
  AttentionOnlyModel<Scalar> m;
  m.config = detail::infer_config(file, options, explicit_config);
  const ModelConfig& c = m.config;
  const int64_t V = c.d_vocab, D = c.d_model, H = c.n_heads, d = c.d_head, N = c.n_ctx;
  auto expect = [&](const std::string& name, const std::vector<int64_t>& shape, const char* dims) {
    detail::expect_tensor_shape(file, name, shape, dims, explicit_config);
  };
  auto finite = [&](const auto& mat, const std::string& name) {
    if (options.check_finite) detail::expect_finite(mat, file.path(), name);
  };
  auto read_matrix = [&](const std::string& name, int64_t rows, int64_t cols, const char* dims) {
    expect(name, {rows, cols}, dims);
    Matrix<Scalar> mat = file.matrix<Scalar>(name, rows, cols);
    finite(mat, name);
    return mat;
  };
  auto read_vector = [&](const std::string& name, int64_t n, const char* dims, bool optional) {
    if (optional && !file.contains(name)) return Vector<Scalar>(Vector<Scalar>::Zero(n));
    expect(name, {n}, dims);
    Vector<Scalar> v = file.vector<Scalar>(name, n);
    finite(v, name);
    return v;
  };
  auto read_ln = [&](const std::string& prefix) {
    LayerNorm<Scalar> ln;
    ln.type = c.normalization_type;
    ln.eps = static_cast<Scalar>(c.eps);
    if (c.normalization_type == NormalizationType::LN) {
      ln.w = read_vector(prefix + ".w", D, "[d_model]", false);
      ln.b = read_vector(prefix + ".b", D, "[d_model]", true);
    }
    return ln;
  };

  m.W_E = read_matrix("embed.W_E", V, D, "[d_vocab, d_model]");
  m.W_pos = read_matrix("pos_embed.W_pos", N, D, "[n_ctx, d_model]");
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "blocks." + std::to_string(l);
    AttentionLayer<Scalar> layer;
    layer.ln1 = read_ln(p + ".ln1");
    auto stack = [&](const char* w, int64_t rows, int64_t cols, const char* dims) {
      const std::string name = p + ".attn." + w;
      expect(name, {H, rows, cols}, dims);
      std::vector<Matrix<Scalar>> ms = file.matrices<Scalar>(name, H, rows, cols);
      if (options.check_finite) {
        for (std::size_t h = 0; h < ms.size(); ++h) {
          detail::expect_finite(ms[h], file.path(), name, static_cast<Index>(h));
        }
      }
      return ms;
    };
    auto biases = [&](const char* b) {
      const std::string name = p + ".attn." + b;
      if (!file.contains(name)) return Matrix<Scalar>(Matrix<Scalar>::Zero(H, d));
      return read_matrix(name, H, d, "[n_heads, d_head]");
    };
    const auto W_Q = stack("W_Q", D, d, "[n_heads, d_model, d_head]");
    const auto W_K = stack("W_K", D, d, "[n_heads, d_model, d_head]");
    const auto W_V = stack("W_V", D, d, "[n_heads, d_model, d_head]");
    const auto W_O = stack("W_O", d, D, "[n_heads, d_head, d_model]");
    const Matrix<Scalar> b_Q = biases("b_Q"), b_K = biases("b_K"), b_V = biases("b_V");
    for (int64_t h = 0; h < H; ++h) {
      const auto hs = static_cast<std::size_t>(h);
      layer.heads.push_back({W_Q[hs], W_K[hs], W_V[hs], W_O[hs], b_Q.row(h).transpose(),
                             b_K.row(h).transpose(), b_V.row(h).transpose()});
    }
    layer.b_O = read_vector(p + ".attn.b_O", D, "[d_model]", true);
    m.layers.push_back(std::move(layer));
  }
  m.ln_final = read_ln("ln_final");
  m.W_U = read_matrix("unembed.W_U", D, V, "[d_model, d_vocab]");
  m.b_U = read_vector("unembed.b_U", V, "[d_vocab]", true);
  m.check_shapes();
  return m;
}

/// Opens `path` (memory-mapped) and loads the model from it.
template <typename Scalar>
AttentionOnlyModel<Scalar> load_model(const std::string& path, const LoadOptions& options = {}) {
  return load_model<Scalar>(SafetensorsFile::open(path), options);
}

/// Writes `model` as safetensors in TransformerLens's naming, with its config as the `config`
/// metadata (the file loads back to the same model). LayerNorm tensors are written only for
/// normalization_type LN. `dtype` is F32 (TransformerLens's default) or F64.
template <typename Scalar>
SafetensorsWriter to_safetensors(const AttentionOnlyModel<Scalar>& model,
                                 Dtype dtype = Dtype::F32) {
  model.check_shapes();
  SafetensorsWriter w;
  w.set_metadata("config", to_json(model.config).dump());
  w.set_metadata("format", "pt");
  w.add("embed.W_E", model.W_E, dtype);
  w.add("pos_embed.W_pos", model.W_pos, dtype);
  for (int l = 0; l < model.n_layers(); ++l) {
    const auto& layer = model.layers[static_cast<std::size_t>(l)];
    const std::string p = "blocks." + std::to_string(l);
    if (layer.ln1.type == NormalizationType::LN) {
      w.add(p + ".ln1.w", layer.ln1.w, dtype);
      w.add(p + ".ln1.b", layer.ln1.b, dtype);
    }
    std::vector<Matrix<Scalar>> W_Q, W_K, W_V, W_O;
    Matrix<Scalar> b_Q(model.n_heads(), model.config.d_head), b_K = b_Q, b_V = b_Q;
    for (std::size_t h = 0; h < layer.heads.size(); ++h) {
      const auto& hd = layer.heads[h];
      W_Q.push_back(hd.W_Q);
      W_K.push_back(hd.W_K);
      W_V.push_back(hd.W_V);
      W_O.push_back(hd.W_O);
      b_Q.row(static_cast<Index>(h)) = hd.b_Q.transpose();
      b_K.row(static_cast<Index>(h)) = hd.b_K.transpose();
      b_V.row(static_cast<Index>(h)) = hd.b_V.transpose();
    }
    w.add_stack(p + ".attn.W_Q", W_Q, dtype);
    w.add_stack(p + ".attn.W_K", W_K, dtype);
    w.add_stack(p + ".attn.W_V", W_V, dtype);
    w.add_stack(p + ".attn.W_O", W_O, dtype);
    w.add(p + ".attn.b_Q", b_Q, dtype);
    w.add(p + ".attn.b_K", b_K, dtype);
    w.add(p + ".attn.b_V", b_V, dtype);
    w.add(p + ".attn.b_O", layer.b_O, dtype);
  }
  if (model.ln_final.type == NormalizationType::LN) {
    w.add("ln_final.w", model.ln_final.w, dtype);
    w.add("ln_final.b", model.ln_final.b, dtype);
  }
  w.add("unembed.W_U", model.W_U, dtype);
  w.add("unembed.b_U", model.b_U, dtype);
  return w;
}

/// Saves `model` to `path` (see `to_safetensors`).
template <typename Scalar>
void save_model(const AttentionOnlyModel<Scalar>& model, const std::string& path,
                Dtype dtype = Dtype::F32) {
  to_safetensors(model, dtype).write(path);
}

}  // namespace circuitry
