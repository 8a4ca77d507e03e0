// qat: quantization-aware training of the calibrated simulation, evaluated after each
// epoch, checkpointed at each epoch's end and resumed from the last checkpoint.
#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "recipe/steps/run_context.h"
#include "status.h"
#include "train/qat.h"
#include "train/trainer.h"

namespace qopt {
namespace {

std::string Duration(double seconds) {
  const int64_t s = std::llround(std::max(seconds, 0.0));
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

TrainOptions TrainOptionsFrom(const v1::QatStep& q, const c10::Device& device) {
  TrainOptions o;
  o.epochs = q.epochs();
  o.batch_size = q.batch_size();
  o.optimizer = q.optimizer() == "adam" ? TrainOptions::Optimizer::kAdam : TrainOptions::Optimizer::kSgd;
  o.momentum = q.momentum();
  o.schedule = q.schedule() == "step"       ? TrainOptions::Schedule::kStep
               : q.schedule() == "constant" ? TrainOptions::Schedule::kConstant
                                            : TrainOptions::Schedule::kCosine;
  o.step_epochs = q.step_epochs();
  o.step_gamma = q.step_gamma();
  o.loss = q.loss() == "distill" ? LossKind::kDistill : q.loss() == "both" ? LossKind::kBoth : LossKind::kLabels;
  o.temperature = q.temperature();
  o.distill_weight = q.distill_weight();
  o.random_crop_padding = q.random_crop_padding();
  o.horizontal_flip = q.horizontal_flip();
  o.max_steps_per_epoch = q.max_steps_per_epoch();
  o.seed = q.seed();
  o.device = device;
  return o;
}

// "top-1 91.23 % (fp32 92.21 %)", or the fidelity figures when the data has no labels.
std::string Accuracy(const Figures& f) {
  if (f.count("top1")) return absl::StrFormat("top-1 %.2f %% (fp32 %.2f %%)", 100 * f.at("top1"), 100 * f.at("fp32_top1"));
  if (f.count("top1_agreement")) {
    return absl::StrFormat("top-1 agreement %.4f, output SQNR %.2f dB", f.at("top1_agreement"), f.at("output_sqnr_db"));
  }
  return "not evaluated";
}

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
  for (const Node* n : run.graph->LiveNodes()) {
    if (n->kind == OpKind::kBatchNorm) {
      // fold_batch_norm left it: no conv or linear before it to fold into.
      RETURN_IF_ERROR(run.Log(absl::StrCat("qat: batch norm ", n->name,
                                           " has no layer to fold into; it stays at its running statistics")));
    }
  }
  ASSIGN_OR_RETURN(const Dataset data, run.TrainingData(q.data()));
  ASSIGN_OR_RETURN(const std::vector<Batch>* eval, run.Evaluation());
  const size_t eval_batches = Limit(q.eval_batches(), eval->size());

  QatOptions options;
  ASSIGN_OR_RETURN(options.range_learning, ParseRangeLearning(q.range_learning()));
  options.learning_rate = q.learning_rate();
  options.range_learning_rate = q.range_learning_rate();
  options.weight_decay = q.weight_decay();
  options.evaluate = [&](int epoch) -> absl::StatusOr<Figures> {
    return EvaluateSim(*run.sim, *eval, eval_batches, [&](size_t done, size_t total) {
      return run.Progress(1.0, absl::StrFormat("epoch %d/%d: evaluating, batch %d/%d", epoch, q.epochs(), done, total));
    });
  };
  ASSIGN_OR_RETURN(std::unique_ptr<QatTask> task, QatTask::Create(*run.graph, *run.sim, options));
  RETURN_IF_ERROR(run.Log(WhatTrains(task->summary(), options.range_learning)));

  TrainOptions train = TrainOptionsFrom(q, run.device());
  train.checkpoint_path = run.checkpoint_path();
  train.fingerprint = run.StepFingerprint();
  TrainCallbacks callbacks;
  auto last_report = std::chrono::steady_clock::now() - std::chrono::seconds(1);
  callbacks.on_iteration = [&](const TrainProgress& p) -> absl::Status {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_report < std::chrono::milliseconds(500) && p.step != p.steps) return run.CheckCancelled();
    last_report = now;
    const double fraction = (p.epoch - 1 + static_cast<double>(p.step) / p.steps) / p.epochs;
    return run.Progress(fraction, absl::StrFormat("epoch %d/%d step %d/%d: loss %.4f, lr %.3g, %.0f images/s, ETA %s",
                                                  p.epoch, p.epochs, p.step, p.steps, p.loss, p.learning_rate,
                                                  p.images_per_second, Duration(p.eta_seconds)));
  };
  callbacks.on_epoch = [&](const EpochRow& r) {
    Figures figures = r.figures;
    figures["epoch"] = r.epoch;
    figures["loss"] = r.loss;
    figures["images_per_second"] = r.images_per_second;
    return run.Log(absl::StrFormat("qat: epoch %d/%d: loss %.4f, %s, %.0f images/s, %s", r.epoch, q.epochs(), r.loss,
                                   Accuracy(r.figures), r.images_per_second, Duration(r.seconds)),
                   figures);
  };
  callbacks.on_resume = [&](const std::vector<EpochRow>& done) {
    return run.Log(absl::StrFormat("qat: resumed from epoch %d of %d (checkpoint)", done.size(), q.epochs()));
  };
  callbacks.on_checkpoint = [&] { run.CheckpointWritten(); };
  ASSIGN_OR_RETURN(const TrainResult result, Train(*task, data, train, callbacks));

  // The report: one row per epoch, curves of loss and accuracy, and the last epoch's
  // figures as the step's own.
  v1::StepReport& part = run.part();
  v1::Series* loss = part.add_series();
  loss->set_name("training loss");
  v1::Series* top1 = part.add_series();
  top1->set_name("top1");
  for (const EpochRow& r : result.epochs) {
    v1::LayerRow* row = part.add_layers();
    row->set_layer(absl::StrCat("epoch ", r.epoch));
    auto& f = *row->mutable_figures();
    f.insert(r.figures.begin(), r.figures.end());
    f["loss"] = r.loss;
    f["seconds"] = r.seconds;
    f["images_per_second"] = r.images_per_second;
    loss->add_x(r.epoch);
    loss->add_y(r.loss);
    if (r.figures.count("top1")) {
      top1->add_x(r.epoch);
      top1->add_y(r.figures.at("top1"));
    }
  }
  auto& figures = *part.mutable_figures();
  if (!result.epochs.empty()) figures.insert(result.epochs.back().figures.begin(), result.epochs.back().figures.end());
  figures["epochs"] = static_cast<double>(result.epochs.size());
  figures["resumed_epochs"] = result.resumed_epochs;
  figures["training_samples"] = static_cast<double>(data.size());
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
  RETURN_IF_ERROR(SetDetails(details, &part));
  if (!result.epochs.empty()) run.metrics = result.epochs.back().figures;
  return absl::OkStatus();
}

}  // namespace qopt
