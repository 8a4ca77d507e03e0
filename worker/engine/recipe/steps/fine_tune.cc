// fine_tune: trains the floating-point model (typically after compression) with labels or
// by distillation from the model as the recipe loaded it, evaluated before training and
// after each epoch, checkpointed at each epoch's end.
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "recipe/steps/run_context.h"
#include "recipe/steps/training.h"
#include "status.h"
#include "train/fine_tune.h"
#include "train/trainer.h"

namespace qopt {

absl::Status RunFineTuneStep(const v1::Step& step, RunContext& run) {
  const v1::FineTuneStep& q = step.fine_tune();
  ASSIGN_OR_RETURN(const Dataset data, run.TrainingData(q.data()));
  ASSIGN_OR_RETURN(const std::vector<Batch>* eval, run.ValidationOrEvaluation());
  const size_t eval_batches = Limit(q.eval_batches(), eval->size());
  auto evaluate = [&](const std::string& when) -> absl::StatusOr<Figures> {
    Interpreter interpreter(*run.graph);
    return EvaluateModel([&](const at::Tensor& x) { return interpreter.Forward(x); }, *eval, eval_batches, nullptr, run.metric(),
                         [&](size_t done, size_t total) {
                           return run.Progress(1.0, absl::StrFormat("%s: evaluating, batch %d/%d", when, done, total));
                         });
  };

  std::unique_ptr<Graph> teacher;
  if (q.loss() != "labels") {
    ASSIGN_OR_RETURN(teacher, run.Import());
  }
  FineTuneOptions options;
  options.learning_rate = q.learning_rate();
  options.weight_decay = q.weight_decay();
  options.teacher = teacher.get();
  options.evaluate = [&](int epoch) { return evaluate(absl::StrFormat("epoch %d/%d", epoch, q.epochs())); };

  ASSIGN_OR_RETURN(const Figures before, evaluate("before training"));
  RETURN_IF_ERROR(run.Log(absl::StrCat("fine_tune: before training ", AccuracyText(before)), before));
  ASSIGN_OR_RETURN(std::unique_ptr<FineTuneTask> task, FineTuneTask::Create(*run.graph, options));
  const GraphParams& p = task->params();
  RETURN_IF_ERROR(run.Log(absl::StrFormat("fine_tune: trains %d weight tensors (%d values) and %d biases, loss %s",
                                          p.weight_tensors, p.weight_values, p.bias_tensors, q.loss())));

  TrainOptions train = TrainOptionsFrom(q, run.device());
  train.checkpoint_path = run.checkpoint_path();
  train.fingerprint = run.StepFingerprint();
  ASSIGN_OR_RETURN(const TrainResult result, Train(*task, data, train, StepTrainCallbacks(run, "fine_tune", q.epochs())));

  ReportEpochs(result, data.size(), run);
  auto& figures = *run.part().mutable_figures();
  for (const auto& [name, value] : before) figures[name + "_before"] = value;
  figures["trained_weight_values"] = static_cast<double>(p.weight_values);
  nlohmann::ordered_json details;
  details["loss"] = q.loss();
  details["optimizer"] = q.optimizer();
  details["schedule"] = q.schedule();
  details["learning_rate"] = q.learning_rate();
  return SetDetails(details, &run.part());
}

}  // namespace qopt
