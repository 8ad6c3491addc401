// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT
#pragma once

/// \file circuitry.hpp
/// The umbrella header: includes every public header of circuitry.
///
///     #include <circuitry/circuitry.hpp>

#include "circuitry/error.hpp"
#include "circuitry/types.hpp"
#include "circuitry/factored_matrix.hpp"
#include "circuitry/safetensors.hpp"
#include "circuitry/config.hpp"
#include "circuitry/layer_norm.hpp"
#include "circuitry/attention_head.hpp"
#include "circuitry/model.hpp"
#include "circuitry/model_io.hpp"
#include "circuitry/processing.hpp"
#include "circuitry/residual_stream.hpp"
#include "circuitry/circuits.hpp"
#include "circuitry/composition.hpp"
#include "circuitry/forward.hpp"
#include "circuitry/path_expansion.hpp"
#include "circuitry/qk_decomposition.hpp"
#include "circuitry/head_detectors.hpp"
#include "circuitry/tokenizer.hpp"
#include "circuitry/report.hpp"
#include "circuitry/data_report.hpp"
