// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file circuitry.hpp
/// The umbrella header: includes every public header of circuitry.
///
///     #include <circuitry/circuitry.hpp>

#include "circuitry/attention_head.hpp"
#include "circuitry/circuits.hpp"
#include "circuitry/composition.hpp"
#include "circuitry/config.hpp"
#include "circuitry/data_report.hpp"
#include "circuitry/error.hpp"
#include "circuitry/factored_matrix.hpp"
#include "circuitry/forward.hpp"
#include "circuitry/head_detectors.hpp"
#include "circuitry/layer_norm.hpp"
#include "circuitry/model.hpp"
#include "circuitry/model_io.hpp"
#include "circuitry/path_expansion.hpp"
#include "circuitry/path_orders.hpp"
#include "circuitry/processing.hpp"
#include "circuitry/qk_decomposition.hpp"
#include "circuitry/report.hpp"
#include "circuitry/residual_stream.hpp"
#include "circuitry/safetensors.hpp"
#include "circuitry/svg.hpp"
#include "circuitry/svg_canvas.hpp"
#include "circuitry/tokenizer.hpp"
#include "circuitry/types.hpp"
