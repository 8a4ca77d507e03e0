// Runs a qopt Graph. Common layer ops call ATen directly; every other op runs through the
// TorchScript operator registry, so ops without a fast path still execute.
#pragma once

#include <functional>
#include <vector>

#include <ATen/core/ivalue.h>

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace qopt {

/// Sees every value as it is produced and may replace it. Quantization simulation,
/// calibration statistics and per-layer analyses are observers.
class ValueObserver {
 public:
  virtual ~ValueObserver() = default;
  /// A parameter about to be read by its layer; may be replaced (e.g. quantized).
  virtual void OnParam(const Value& /*param*/, at::Tensor& /*tensor*/) {}
  /// A model input or a node output, right after it is produced.
  virtual void OnValue(const Value& /*value*/, c10::IValue& /*v*/) {}
};

class Interpreter {
 public:
  /// `graph` must outlive the interpreter. Nodes removed from the graph later need a new
  /// interpreter.
  explicit Interpreter(const Graph& graph);

  /// Runs the model. Returns the single output, or a tuple for several.
  /// Errors (shape mismatch, wrong input count) name the failing layer and op.
  absl::StatusOr<c10::IValue> Run(const std::vector<c10::IValue>& inputs,
                                  ValueObserver* observer = nullptr) const;

  /// Convenience: one tensor in, one tensor out.
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& input,
                                     ValueObserver* observer = nullptr) const;

 private:
  struct Step {
    const Node* node;
    std::function<void(std::vector<c10::IValue>&)> op;  // generic path
    std::vector<int> release;  // values whose last use is this step
  };
  const Graph& graph_;
  std::vector<Step> steps_;
};

}  // namespace qopt
