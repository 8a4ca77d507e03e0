#include "train/fine_tune.h"

#include <ATen/ATen.h>

#include "status.h"

namespace qopt {

// The forward pass with gradients: parameters replaced by the tensors that learn. Keeps
// every value (no in-place ops), which autograd needs.
class FineTuneTask::Observer : public ValueObserver {
 public:
  explicit Observer(const std::map<int, at::Tensor>& leaves) : leaves_(leaves) {}
  void OnParam(const Value& param, at::Tensor& tensor) override {
    if (auto it = leaves_.find(param.id); it != leaves_.end()) tensor = it->second;
  }
  bool RetainsValues() const override { return true; }

 private:
  const std::map<int, at::Tensor>& leaves_;
};

FineTuneTask::FineTuneTask(Graph& graph, FineTuneOptions options)
    : graph_(graph), options_(std::move(options)), interpreter_(graph) {}

FineTuneTask::~FineTuneTask() = default;

absl::StatusOr<std::unique_ptr<FineTuneTask>> FineTuneTask::Create(Graph& graph, FineTuneOptions options) {
  std::unique_ptr<FineTuneTask> task(new FineTuneTask(graph, std::move(options)));
  FineTuneTask& t = *task;
  t.params_ = CollectGraphParams(graph, t.options_.learning_rate, t.options_.weight_decay);
  if (t.params_.weights.tensors.empty()) return absl::FailedPreconditionError("the model has no weights to train");
  t.groups_.push_back(t.params_.weights);
  if (!t.params_.biases.tensors.empty()) t.groups_.push_back(t.params_.biases);
  if (t.options_.teacher != nullptr) t.teacher_ = std::make_unique<Interpreter>(*t.options_.teacher);
  t.observer_ = std::make_unique<Observer>(t.params_.leaves);
  return task;
}

absl::StatusOr<at::Tensor> FineTuneTask::Forward(const at::Tensor& inputs) {
  ASSIGN_OR_RETURN(c10::IValue out, interpreter_.Run({c10::IValue(inputs)}, observer_.get()));
  if (!out.isTensor()) return absl::InvalidArgumentError("training needs a model with one tensor output");
  return out.toTensor();
}

absl::StatusOr<at::Tensor> FineTuneTask::Teacher(const at::Tensor& inputs) {
  if (!teacher_) return absl::FailedPreconditionError("distillation needs the model before compression");
  at::NoGradGuard no_grad;
  return teacher_->Forward(inputs);
}

absl::StatusOr<std::map<std::string, double>> FineTuneTask::EndEpoch(int epoch) {
  WriteGraphParams(graph_, params_.leaves);
  if (!options_.evaluate) return std::map<std::string, double>{};
  return options_.evaluate(epoch);
}

}  // namespace qopt
