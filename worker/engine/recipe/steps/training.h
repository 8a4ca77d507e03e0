// What the training steps (qat, fine_tune) share: trainer options from the step's fields
// (named alike in both messages), progress and per-epoch log lines, and the report's
// per-epoch rows and curves.
#pragma once

#include <string>

#include "recipe/steps/run_context.h"
#include "train/trainer.h"

namespace qopt {

template <typename Step>
TrainOptions TrainOptionsFrom(const Step& q, const c10::Device& device) {
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

/// "top-1 91.23 %" (with " (fp32 92.21 %)" when the figures have it), or the fidelity
/// figures when the data has no labels.
std::string AccuracyText(const Figures& f);

/// Callbacks that report progress at most twice a second, log each epoch as
/// "<stage>: epoch 2/3: loss ..., <accuracy>, N images/s, 1m05s", log a resumed run and
/// announce checkpoints.
TrainCallbacks StepTrainCallbacks(RunContext& run, const std::string& stage, int epochs);

/// The running step's report: one row per epoch, curves of training loss and top-1, the
/// last epoch's figures as the step's own, epochs / resumed_epochs / training_samples;
/// the last epoch's figures become the run's metrics.
void ReportEpochs(const TrainResult& result, int64_t training_samples, RunContext& run);

}  // namespace qopt
