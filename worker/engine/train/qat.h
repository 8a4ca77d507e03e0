// Quantization-aware training of a calibrated simulation: the graph's weights and biases,
// and with range learning the quantizers' grids, learn through the simulated forward pass.
// Batch norms were folded before calibration (the recipe requires it), so what trains is
// the model that deploys: folded weights on the grid they are exported with. Folding is
// also what keeps small-batch statistics out of training: nothing is re-estimated.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "ir/interpreter.h"
#include "quant/quantsim.h"
#include "train/trainable_quantizer.h"
#include "train/trainer.h"

namespace qopt {

struct QatOptions {
  RangeLearning range_learning = RangeLearning::kOff;
  double learning_rate = 1e-3;        // weights and biases
  double range_learning_rate = 1e-3;  // quantizer ranges
  double weight_decay = 0.0;          // weights only
  /// The figures of the simulation after each epoch (the task has written the trained
  /// state into the graph and the simulation before calling it).
  std::function<absl::StatusOr<std::map<std::string, double>>(int epoch)> evaluate;
};

/// What QAT trains, for the report.
struct QatSummary {
  int weight_tensors = 0;
  int64_t weight_values = 0;
  int bias_tensors = 0;
  int param_quantizers = 0;
  int activation_quantizers = 0;
  int learned_ranges = 0;  // quantizers whose grid learns
  int fixed_grids = 0;     // frozen encodings (a frozen encodings file, AdaRound) kept as they are
};

class QatTask : public TrainingTask {
 public:
  /// `graph` and `sim` (calibrated, over `graph`) must outlive the task. The graph's
  /// current parameters are recorded as the simulation's floating-point reference, so
  /// RunFloat (the teacher, and evaluation's FP32 figures) keeps the model as it came.
  static absl::StatusOr<std::unique_ptr<QatTask>> Create(Graph& graph, QuantSim& sim, QatOptions options);
  ~QatTask() override;

  const std::vector<ParamGroup>& groups() const override { return groups_; }
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& inputs) override;
  absl::StatusOr<at::Tensor> Teacher(const at::Tensor& inputs) override;
  void AfterStep() override;
  /// Writes the trained state back, then evaluates.
  absl::StatusOr<std::map<std::string, double>> EndEpoch(int epoch) override;

  /// The trained weights into the graph and the trained grids into the simulation as
  /// (frozen) encodings: from then on the simulation, and what export writes, compute
  /// exactly what training's forward pass computes.
  absl::Status WriteBack();
  const QatSummary& summary() const { return summary_; }

 private:
  class Observer;
  QatTask(Graph& graph, QuantSim& sim, QatOptions options);

  Graph& graph_;
  QuantSim& sim_;
  QatOptions options_;
  Interpreter interpreter_;
  std::map<int, at::Tensor> leaves_;  // parameter value id -> the tensor that learns
  std::map<int, TrainableQuantizer> param_quantizers_, activation_quantizers_;
  std::vector<ParamGroup> groups_;
  std::unique_ptr<Observer> observer_;
  QatSummary summary_;
};

}  // namespace qopt
