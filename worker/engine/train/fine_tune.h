// Fine-tuning of a floating-point model (after compression): its weights and biases learn
// through the interpreter's forward pass; a teacher model (the model before compression)
// serves distillation.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "ir/interpreter.h"
#include "train/graph_params.h"
#include "train/trainer.h"

namespace qopt {

struct FineTuneOptions {
  double learning_rate = 1e-2;
  double weight_decay = 0.0;  // weights only
  /// The model distillation learns from; null when the loss needs no teacher.
  const Graph* teacher = nullptr;
  /// The model's figures after each epoch (its trained parameters written back first).
  std::function<absl::StatusOr<std::map<std::string, double>>(int epoch)> evaluate;
};

class FineTuneTask : public TrainingTask {
 public:
  /// `graph` (and the teacher) must outlive the task.
  static absl::StatusOr<std::unique_ptr<FineTuneTask>> Create(Graph& graph, FineTuneOptions options);
  ~FineTuneTask() override;

  const std::vector<ParamGroup>& groups() const override { return groups_; }
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& inputs) override;
  absl::StatusOr<at::Tensor> Teacher(const at::Tensor& inputs) override;
  /// Writes the trained parameters into the graph, then evaluates.
  absl::StatusOr<std::map<std::string, double>> EndEpoch(int epoch) override;

  const GraphParams& params() const { return params_; }

 private:
  class Observer;
  FineTuneTask(Graph& graph, FineTuneOptions options);

  Graph& graph_;
  FineTuneOptions options_;
  Interpreter interpreter_;
  std::unique_ptr<Interpreter> teacher_;
  GraphParams params_;
  std::vector<ParamGroup> groups_;
  std::unique_ptr<Observer> observer_;
};

}  // namespace qopt
