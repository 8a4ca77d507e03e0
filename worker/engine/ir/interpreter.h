// Runs a qopt Graph. Ops with a fast path in the op registry call ATen directly; every
// other op runs through the TorchScript operator registry; prim::If and prim::Loop run
// their blocks. Ops that passes created run like imported ones.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/ivalue.h>

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "ir/op_registry.h"

namespace torch::jit {
struct Graph;
}  // namespace torch::jit

namespace qopt {

/// Sees every value as it is produced and may replace it. Quantization simulation,
/// calibration statistics and per-layer analyses are observers. Exceptions an observer
/// throws fail the run with an error naming the node, like the op's own.
class ValueObserver {
 public:
  virtual ~ValueObserver() = default;
  /// A parameter about to be read by its layer; may be replaced (e.g. quantized).
  virtual void OnParam(const Value& /*param*/, at::Tensor& /*tensor*/) {}
  /// The inputs of `node` (not control flow), right before it runs; may replace them (a
  /// simulation that computes the node as an integer kernel does).
  virtual void OnInputs(const Node& /*node*/, std::vector<c10::IValue>& /*inputs*/) {}
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

/// Where runs spend their time, per op: the op's own time and the observer's time on
/// the op's outputs (quantization, calibration statistics). Sums over every run it is
/// given to; a profiled run reads the clock twice per node.
struct RunProfile {
  struct Op {
    int64_t calls = 0;
    double op_seconds = 0.0;        // the op, and freeing the values it read last
    double observer_seconds = 0.0;  // the observer on its outputs
  };
  std::map<std::string, Op> by_op;  // by op name ("aten::_convolution")
  double setup_seconds = 0.0;       // parameters and inputs, before the first op
  int runs = 0;
};

class Interpreter {
 public:
  /// `graph` must outlive the interpreter. A graph edited later needs a new interpreter.
  /// An op that cannot run with its inputs' types makes every Run fail, naming the node.
  explicit Interpreter(const Graph& graph);
  ~Interpreter();
  Interpreter(const Interpreter&) = delete;
  Interpreter& operator=(const Interpreter&) = delete;

  /// Runs the model. Returns the single output, or a tuple for several.
  /// Errors (shape mismatch, wrong input count, an op or observer throwing) name the
  /// failing node and op.
  /// `profile`, when given, gets the run's time per op added to it.
  absl::StatusOr<c10::IValue> Run(const std::vector<c10::IValue>& inputs,
                                  ValueObserver* observer = nullptr,
                                  RunProfile* profile = nullptr) const;

  /// Convenience: one tensor in, one tensor out.
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& input,
                                     ValueObserver* observer = nullptr) const;

  struct Step;
  using Steps = std::vector<Step>;

 private:
  absl::Status Build();
  absl::StatusOr<Steps> BuildBlock(const Block& block, bool top_level);
  struct RunState;
  /// Runs `steps`; false when the observer finished early.
  absl::StatusOr<bool> RunSteps(const Steps& steps, RunState& state) const;
  absl::Status RunControlFlow(const Step& step, RunState& state, bool& finished) const;

  const Graph& graph_;
  std::shared_ptr<torch::jit::Graph> scratch_;  // the nodes operations were taken from
  std::unique_ptr<Steps> steps_;
  absl::Status built_;
};

struct Interpreter::Step {
  const Node* node = nullptr;
  const OpDef* def = nullptr;                            // fast path, if any
  std::function<void(std::vector<c10::IValue>&)> op;    // generic path
  std::vector<int> release;  // values whose last use is this step (top level only)
  // The op may overwrite its first input: a fresh tensor from a compute op whose last
  // use is this step (relu_ / hardtanh_ / add_ instead of allocating).
  bool inplace = false;
  std::vector<Steps> blocks;  // control flow
};

}  // namespace qopt
