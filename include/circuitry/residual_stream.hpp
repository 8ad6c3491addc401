// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file residual_stream.hpp
/// The residual stream as the paper sees it: a sum of what each component wrote,
///
///     resid = embed + pos_embed + sum_{l, h} head_{l,h} + sum_l b_O^l
///
/// kept term by term so that later code can attribute a logit or a score to a component, or
/// ablate one (drop it from the sum). Rows are token positions (a batch is flattened row-major:
/// sequence b, position p is row b * seq_len + p); columns are d_model.
///
/// Example:
///
///     circuitry::ResidualStream<double> r(n_tokens, d_model);
///     r.add(circuitry::Component::embed(), W_E_rows);
///     r.add(circuitry::Component::head({0, 3}), head_output);
///     Matrix<double> without_head = r.total_without({circuitry::Component::head({0, 3})});

#include <algorithm>
#include <string>
#include <vector>

#include "circuitry/attention_head.hpp"
#include "circuitry/error.hpp"
#include "circuitry/types.hpp"

namespace circuitry {

/// What a term of the residual stream came from.
enum class ComponentKind {
  embed,      ///< token embedding W_E[t]
  pos_embed,  ///< positional embedding W_pos[p] (standard positions only)
  head,       ///< one attention head's output (pattern v) W_O
  attn_bias,  ///< a layer's output bias b_O
};

/// A named writer to the residual stream: "embed", "pos_embed", "L1H4", "L1.b_O".
struct Component {
  ComponentKind kind = ComponentKind::embed;
  int layer = -1;  ///< for head and attn_bias
  int head = -1;   ///< for head

  static Component embed() { return {ComponentKind::embed, -1, -1}; }
  static Component pos_embed() { return {ComponentKind::pos_embed, -1, -1}; }
  static Component head_output(HeadId id) { return {ComponentKind::head, id.layer, id.head}; }
  static Component attn_bias(int layer) { return {ComponentKind::attn_bias, layer, -1}; }

  std::string name() const {
    switch (kind) {
      case ComponentKind::embed: return "embed";
      case ComponentKind::pos_embed: return "pos_embed";
      case ComponentKind::head: return HeadId{layer, head}.name();
      case ComponentKind::attn_bias: return "L" + std::to_string(layer) + ".b_O";
    }
    return "?";
  }
  friend bool operator==(const Component& a, const Component& b) {
    return a.kind == b.kind && a.layer == b.layer && a.head == b.head;
  }
  friend bool operator!=(const Component& a, const Component& b) { return !(a == b); }
};

/// A residual stream kept as a sum of component contributions. Invariant: every contribution
/// is rows() x d_model(); components are unique and kept in the order they were first added.
template <typename Scalar>
class ResidualStream {
 public:
  CIRCUITRY_STATIC_ASSERT_SCALAR(Scalar);

  ResidualStream() = default;
  ResidualStream(Index rows, Index d_model) : rows_(rows), d_model_(d_model) {}

  Index rows() const { return rows_; }
  Index d_model() const { return d_model_; }
  std::size_t size() const { return components_.size(); }
  const std::vector<Component>& components() const { return components_; }

  /// Adds `contribution` as component `c` (summing into it if `c` is already there). A row
  /// vector (1 x d_model) is broadcast to every row (biases). shape_error otherwise.
  template <typename Derived>
  void add(const Component& c, const Eigen::MatrixBase<Derived>& contribution) {
    const bool broadcast = contribution.rows() == 1 && rows_ != 1;
    if (contribution.cols() != d_model_ || (!broadcast && contribution.rows() != rows_)) {
      throw shape_error("ResidualStream::add(" + c.name() + "): contribution is " +
                        std::to_string(contribution.rows()) + " x " +
                        std::to_string(contribution.cols()) + ", expected " +
                        std::to_string(rows_) + " x " + std::to_string(d_model_) + " or 1 x " +
                        std::to_string(d_model_));
    }
    const auto it = std::find(components_.begin(), components_.end(), c);
    Matrix<Scalar>* target;
    if (it == components_.end()) {
      components_.push_back(c);
      terms_.emplace_back(Matrix<Scalar>::Zero(rows_, d_model_));
      target = &terms_.back();
    } else {
      target = &terms_[static_cast<std::size_t>(it - components_.begin())];
    }
    if (broadcast) {
      target->rowwise() += contribution.row(0);
    } else {
      *target += contribution;
    }
  }

  bool contains(const Component& c) const {
    return std::find(components_.begin(), components_.end(), c) != components_.end();
  }

  /// The contribution of `c`; argument_error if it is not in the stream.
  const Matrix<Scalar>& operator[](const Component& c) const {
    const auto it = std::find(components_.begin(), components_.end(), c);
    if (it == components_.end()) {
      throw argument_error("ResidualStream: no component '" + c.name() + "'");
    }
    return terms_[static_cast<std::size_t>(it - components_.begin())];
  }

  /// Sum of the contributions for which `keep(component)` is true.
  template <typename Predicate>
  Matrix<Scalar> sum_if(Predicate keep) const {
    Matrix<Scalar> out = Matrix<Scalar>::Zero(rows_, d_model_);
    for (std::size_t i = 0; i < components_.size(); ++i) {
      if (keep(components_[i])) out += terms_[i];
    }
    return out;
  }

  /// The whole stream: the sum of every contribution.
  Matrix<Scalar> total() const {
    return sum_if([](const Component&) { return true; });
  }

  /// The stream with the given components ablated (left out of the sum).
  Matrix<Scalar> total_without(const std::vector<Component>& ablated) const {
    return sum_if([&](const Component& c) {
      return std::find(ablated.begin(), ablated.end(), c) == ablated.end();
    });
  }

 private:
  Index rows_ = 0;
  Index d_model_ = 0;
  std::vector<Component> components_;
  std::vector<Matrix<Scalar>> terms_;
};

}  // namespace circuitry
