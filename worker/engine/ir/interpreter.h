// Runs a qopt Graph. Common layer ops call ATen directly; every other op runs through the
// TorchScript operator registry, so ops without a fast path still execute.
#pragma once

#include <functional>
#include <utility>
#include <vector>

#include <ATen/core/ivalue.h>

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace qopt {

/// True for ops whose output is a newly allocated tensor that aliases no other value, so
/// the consumer that sees it last may overwrite it.
bool ProducesFreshTensor(OpKind kind);

/// Sees every value as it is produced and may replace it. Quantization simulation,
/// calibration statistics and per-layer analyses are observers.
class ValueObserver {
 public:
  virtual ~ValueObserver() = default;
  /// A parameter about to be read by its layer; may be replaced (e.g. quantized).
  virtual void OnParam(const Value& /*param*/, at::Tensor& /*tensor*/) {}
  /// A model input or a node output, right after it is produced.
  virtual void OnValue(const Value& /*value*/, c10::IValue& /*v*/) {}
  /// Whether the observer keeps references to the tensors it sees. If not, the
  /// interpreter may run activations in place on tensors no one else can see.
  virtual bool RetainsValues() const { return true; }
  /// True when what the observer does to this node's output makes the node an identity
  /// (a ReLU followed by a quantizer whose grid starts at zero); the node is then skipped.
  virtual bool Bypasses(const Node& /*node*/) const { return false; }
  /// True once the observer has seen all it needs: the run stops after the current node
  /// and returns an undefined value instead of the model's output.
  virtual bool Finished() const { return false; }
};

/// Keeps one value of a run (say, a layer's input or output) and stops the run there:
/// the layers after it have nothing to add.
class ValueCapture : public ValueObserver {
 public:
  explicit ValueCapture(int value_id) : value_id_(value_id) {}
  void OnValue(const Value& value, c10::IValue& v) override {
    if (value.id == value_id_ && v.isTensor()) seen_ = v.toTensor();
  }
  bool RetainsValues() const override { return true; }
  bool Finished() const override { return seen_.defined(); }
  /// The captured tensor (undefined when the run never produced it); the next run
  /// captures afresh.
  at::Tensor Take() { return std::exchange(seen_, at::Tensor()); }

 private:
  int value_id_;
  at::Tensor seen_;
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
    // The op may overwrite its first input: a fresh tensor from a compute op whose last
    // use is this step (relu_ / hardtanh_ / add_ instead of allocating).
    bool inplace = false;
  };
  const Graph& graph_;
  std::vector<Step> steps_;
};

}  // namespace qopt
