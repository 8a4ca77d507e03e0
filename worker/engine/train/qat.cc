#include "train/qat.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "train/graph_params.h"
#include "status.h"

namespace qopt {

// The simulated forward pass with gradients: parameters replaced by the tensors that
// learn, then quantized; activations quantized as they are produced. Keeps every value
// (no in-place ops), which autograd needs.
class QatTask::Observer : public ValueObserver {
 public:
  explicit Observer(QatTask& task) : task_(task) {}
  void OnParam(const Value& param, at::Tensor& tensor) override {
    if (auto it = task_.leaves_.find(param.id); it != task_.leaves_.end()) tensor = it->second;
    if (auto it = task_.param_quantizers_.find(param.id); it != task_.param_quantizers_.end()) {
      tensor = it->second.Apply(tensor);
    }
  }
  void OnValue(const Value& value, c10::IValue& v) override {
    auto it = task_.activation_quantizers_.find(value.id);
    if (it == task_.activation_quantizers_.end() || !v.isTensor() || !v.toTensor().is_floating_point()) return;
    v = it->second.Apply(v.toTensor());
  }
  bool RetainsValues() const override { return true; }

 private:
  QatTask& task_;
};

QatTask::QatTask(Graph& graph, QuantSim& sim, QatOptions options)
    : graph_(graph), sim_(sim), options_(std::move(options)), interpreter_(graph) {}

QatTask::~QatTask() = default;

absl::StatusOr<std::unique_ptr<QatTask>> QatTask::Create(Graph& graph, QuantSim& sim, QatOptions options) {
  std::unique_ptr<QatTask> task(new QatTask(graph, sim, std::move(options)));
  QatTask& t = *task;
  GraphParams params = CollectGraphParams(graph, t.options_.learning_rate, t.options_.weight_decay,
                                          [&](int vid, const at::Tensor& current) { sim.SetFloatReference(vid, current); });
  t.leaves_ = params.leaves;
  ParamGroup weights = std::move(params.weights), biases = std::move(params.biases);
  ParamGroup ranges{"ranges", {}, t.options_.range_learning_rate, 0.0};
  t.summary_.weight_tensors = params.weight_tensors;
  t.summary_.weight_values = params.weight_values;
  t.summary_.bias_tensors = params.bias_tensors;
  auto name_of = [&](int vid, const char* suffix) { return absl::StrCat(vid, ":", graph.values[vid].name, suffix); };
  const c10::Device device = t.leaves_.empty() ? c10::Device(c10::kCPU)
                                                                       : t.leaves_.begin()->second.device();
  auto add_ranges = [&](int vid, const TrainableQuantizer& q) {
    const std::vector<at::Tensor> learned = q.ranges();
    static constexpr const char* kSuffix[] = {".range0", ".range1", ".range2"};
    for (size_t k = 0; k < learned.size(); ++k) ranges.tensors.emplace_back(name_of(vid, kSuffix[k]), learned[k]);
    if (!learned.empty()) ++t.summary_.learned_ranges;
  };
  for (const auto& [vid, q] : sim.param_quantizers()) {
    if (!q.enabled() || !q.has_encodings()) continue;
    const at::Tensor param = t.leaves_.count(vid) ? t.leaves_[vid] : graph.values[vid].constant->toTensor();
    ASSIGN_OR_RETURN(TrainableQuantizer tq, TrainableQuantizer::Create(q, t.options_.range_learning, param, device));
    add_ranges(vid, tq);
    if (q.frozen()) ++t.summary_.fixed_grids;
    t.param_quantizers_.emplace(vid, std::move(tq));
    ++t.summary_.param_quantizers;
  }
  for (const auto& [vid, q] : sim.activation_quantizers()) {
    if (!q.enabled() || !q.has_encodings()) continue;
    ASSIGN_OR_RETURN(TrainableQuantizer tq,
                     TrainableQuantizer::Create(q, t.options_.range_learning, at::Tensor(), device));
    add_ranges(vid, tq);
    if (q.frozen()) ++t.summary_.fixed_grids;
    t.activation_quantizers_.emplace(vid, std::move(tq));
    ++t.summary_.activation_quantizers;
  }
  if (weights.tensors.empty()) return absl::FailedPreconditionError("the model has no weights to train");
  t.groups_.push_back(std::move(weights));
  if (!biases.tensors.empty()) t.groups_.push_back(std::move(biases));
  if (!ranges.tensors.empty()) t.groups_.push_back(std::move(ranges));
  t.observer_ = std::make_unique<Observer>(t);
  return task;
}

absl::StatusOr<at::Tensor> QatTask::Forward(const at::Tensor& inputs) {
  ASSIGN_OR_RETURN(c10::IValue out, interpreter_.Run({c10::IValue(inputs)}, observer_.get()));
  if (!out.isTensor()) return absl::InvalidArgumentError("training needs a model with one tensor output");
  return out.toTensor();
}

absl::StatusOr<at::Tensor> QatTask::Teacher(const at::Tensor& inputs) {
  at::NoGradGuard no_grad;
  return sim_.ForwardFloat(inputs);
}

void QatTask::AfterStep() {
  for (auto& [vid, q] : param_quantizers_) q.Clamp();
  for (auto& [vid, q] : activation_quantizers_) q.Clamp();
}

absl::Status QatTask::WriteBack() {
  at::NoGradGuard no_grad;
  WriteGraphParams(graph_, leaves_);
  for (const auto& [vid, q] : param_quantizers_) {
    if (!q.fixed_grid()) {
      RETURN_IF_ERROR(sim_.UpdateParam(vid));
      continue;
    }
    ASSIGN_OR_RETURN(std::vector<Encoding> e, q.Encodings(graph_.values[vid].constant->toTensor()));
    RETURN_IF_ERROR(sim_.SetParamEncodings(vid, std::move(e), /*freeze=*/true));
  }
  for (const auto& [vid, q] : activation_quantizers_) {
    if (q.ranges().empty()) continue;
    ASSIGN_OR_RETURN(std::vector<Encoding> e, q.Encodings(at::Tensor()));
    RETURN_IF_ERROR(sim_.SetActivationEncodings(vid, std::move(e), /*freeze=*/true));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::map<std::string, double>> QatTask::EndEpoch(int epoch) {
  RETURN_IF_ERROR(WriteBack());
  if (!options_.evaluate) return std::map<std::string, double>{};
  return options_.evaluate(epoch);
}

}  // namespace qopt
