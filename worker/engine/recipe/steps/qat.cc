// qat: quantization-aware training of the calibrated simulation, evaluated after each
// epoch, checkpointed at each epoch's end and resumed from the last checkpoint.
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "recipe/steps/run_context.h"
#include "recipe/steps/training.h"
#include "status.h"
#include "train/qat.h"
#include "train/trainer.h"

namespace qopt {
namespace {

std::string WhatTrains(const QatSummary& s, RangeLearning mode) {
  std::string line = absl::StrFormat("qat: trains %d weight tensors (%d values) and %d biases", s.weight_tensors,
                                     s.weight_values, s.bias_tensors);
  switch (mode) {
    case RangeLearning::kOff:
      absl::StrAppendFormat(&line, "; %d activation encodings stay as calibrated, %d weight encodings follow the weights",
                            s.activation_quantizers, s.param_quantizers - s.fixed_grids);
      break;
    case RangeLearning::kAimet:
      absl::StrAppendFormat(&line, "; %d quantizer ranges learn (aimet: min/max, symmetric grids their max)",
                            s.learned_ranges);
      break;
    case RangeLearning::kLsq:
      absl::StrAppendFormat(&line, "; %d quantizer step sizes learn (lsq)", s.learned_ranges);
      break;
  }
  if (s.fixed_grids > 0) absl::StrAppendFormat(&line, "; %d frozen encodings kept", s.fixed_grids);
  return line;
}

}  // namespace

absl::Status RunQatStep(const v1::Step& step, RunContext& run) {
  const v1::QatStep& q = step.qat();
  if (run.sim && run.sim->options().kernels != QuantSimOptions::Kernels::kFakeQuant) {
    return absl::FailedPreconditionError(
        "qat: quantization.kernels onnxruntime_int8 rounds inside conv and add, which passes no gradient; "
        "train with the default fake_quant kernels (the export writes the same model.onnx either way)");
  }
  for (const Node* n : run.graph->LiveNodes()) {
    if (n->kind == OpKind::kBatchNorm) {
      // fold_batch_norm left it: no conv or linear before it to fold into.
      RETURN_IF_ERROR(run.Log(absl::StrCat("qat: batch norm ", n->name,
                                           " has no layer to fold into; it stays at its running statistics")));
    }
  }
  ASSIGN_OR_RETURN(const Dataset data, run.TrainingData(q.data()));
  // Per-epoch figures are what a user picks epochs and learning rates by.
  ASSIGN_OR_RETURN(const std::vector<Batch>* eval, run.ValidationOrEvaluation());
  const size_t eval_batches = Limit(q.eval_batches(), eval->size());

  QatOptions options;
  ASSIGN_OR_RETURN(options.range_learning, ParseRangeLearning(q.range_learning()));
  options.learning_rate = q.learning_rate();
  options.range_learning_rate = q.range_learning_rate();
  options.weight_decay = q.weight_decay();
  options.evaluate = [&](int epoch) -> absl::StatusOr<Figures> {
    return EvaluateSim(*run.sim, *eval, eval_batches, run.metric(), [&](size_t done, size_t total) {
      return run.Progress(1.0, absl::StrFormat("epoch %d/%d: evaluating, batch %d/%d", epoch, q.epochs(), done, total));
    });
  };
  ASSIGN_OR_RETURN(std::unique_ptr<QatTask> task, QatTask::Create(*run.graph, *run.sim, options));
  RETURN_IF_ERROR(run.Log(WhatTrains(task->summary(), options.range_learning)));

  TrainOptions train = TrainOptionsFrom(q, run.device());
  train.checkpoint_path = run.checkpoint_path();
  train.fingerprint = run.StepFingerprint();
  const TrainCallbacks callbacks = StepTrainCallbacks(run, "qat", q.epochs());
  ASSIGN_OR_RETURN(const TrainResult result, Train(*task, data, train, callbacks));

  // The report: one row per epoch, curves of loss and accuracy, the last epoch's figures.
  ReportEpochs(result, data.size(), run);
  v1::StepReport& part = run.part();
  auto& figures = *part.mutable_figures();
  const QatSummary& s = task->summary();
  figures["trained_weight_values"] = static_cast<double>(s.weight_values);
  figures["learned_ranges"] = s.learned_ranges;
  nlohmann::ordered_json details;
  details["range_learning"] = q.range_learning();
  details["loss"] = q.loss();
  details["optimizer"] = q.optimizer();
  details["schedule"] = q.schedule();
  details["trains"] = {{"weight_tensors", s.weight_tensors}, {"bias_tensors", s.bias_tensors},
                       {"param_quantizers", s.param_quantizers}, {"activation_quantizers", s.activation_quantizers},
                       {"learned_ranges", s.learned_ranges}, {"frozen_encodings", s.fixed_grids}};
  return SetDetails(details, &part);
}

}  // namespace qopt
