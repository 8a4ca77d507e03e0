// The engine's trainer: mini-batch gradient descent over a data set, for quantization-
// aware training now and fine-tuning after compression later. What it trains is a
// TrainingTask: a forward pass with gradients and the tensors that learn, in groups with
// their own learning rates. The trainer owns the rest: shuffled, augmented batches moved
// to the device once per batch; torch::optim SGD or Adam; the learning-rate schedule;
// the loss (labels, distillation from a teacher, or both); a stop naming the epoch and
// step when the loss is not finite; progress; and a checkpoint at each epoch's end from
// which a later run resumes.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/statusor.h"
#include "data/dataset.h"

namespace qopt {

enum class LossKind {
  kLabels,   // cross-entropy with the data's labels
  kDistill,  // KL divergence to the teacher's softmax at a temperature (no labels)
  kBoth,     // (1 - distill_weight) * labels + distill_weight * distill
};

struct TrainOptions {
  int epochs = 3;
  int batch_size = 64;
  enum class Optimizer { kSgd, kAdam } optimizer = Optimizer::kSgd;
  double momentum = 0.9;  // SGD
  enum class Schedule { kCosine, kStep, kConstant } schedule = Schedule::kCosine;
  int step_epochs = 1;       // step schedule: epochs between decays
  double step_gamma = 0.1;   // ... and the factor
  LossKind loss = LossKind::kLabels;
  double temperature = 2.0;
  double distill_weight = 0.5;
  /// Random crop after padding by this many pixels with the data's lowest value (the
  /// black of images); random horizontal flips. Inputs (N, C, H, W) only.
  int random_crop_padding = 0;
  bool horizontal_flip = false;
  int64_t max_steps_per_epoch = 0;  // 0 = the whole data set
  uint64_t seed = 0;
  c10::Device device = c10::Device(c10::kCPU);
  /// Checkpoint file rewritten at each epoch's end ("" = none); a checkpoint there with
  /// the same `fingerprint` (what is being trained, and how) is resumed from.
  std::string checkpoint_path;
  std::string fingerprint;
};

/// Tensors that learn together, with their learning rate and weight decay.
struct ParamGroup {
  std::string name;  // "weights", "biases", "ranges"
  std::vector<std::pair<std::string, at::Tensor>> tensors;  // leaf tensors with gradients
  double learning_rate = 1e-3;
  double weight_decay = 0.0;
};

class TrainingTask {
 public:
  virtual ~TrainingTask() = default;
  /// The tensors that learn; the same objects for the whole run.
  virtual const std::vector<ParamGroup>& groups() const = 0;
  /// The model's output (logits) for a batch, with gradients.
  virtual absl::StatusOr<at::Tensor> Forward(const at::Tensor& inputs) = 0;
  /// The teacher's output for distillation (no gradients).
  virtual absl::StatusOr<at::Tensor> Teacher(const at::Tensor& inputs) = 0;
  /// After each optimizer step (e.g. keeping learned ranges valid).
  virtual void AfterStep() {}
  /// At each epoch's end, after the learned tensors were updated: the epoch's figures
  /// (evaluation). When a resumed run has nothing left to train, it runs once for the
  /// last epoch so the task sees its final tensors.
  virtual absl::StatusOr<std::map<std::string, double>> EndEpoch(int epoch) = 0;
};

struct TrainProgress {
  int epoch = 0;  // 1-based
  int epochs = 0;
  int64_t step = 0;  // 1-based within the epoch
  int64_t steps = 0;
  double loss = 0.0;               // mean over the epoch so far
  double learning_rate = 0.0;      // of the first group, now
  double images_per_second = 0.0;  // this epoch so far
  double eta_seconds = 0.0;        // to the end of training, at this speed
};

struct EpochRow {
  int epoch = 0;  // 1-based
  double loss = 0.0;
  double seconds = 0.0;
  double images_per_second = 0.0;
  std::map<std::string, double> figures;  // from TrainingTask::EndEpoch
};

struct TrainCallbacks {
  /// After every iteration; an error (e.g. Cancelled) stops training with it.
  std::function<absl::Status(const TrainProgress&)> on_iteration;
  /// After each epoch's evaluation, before its checkpoint.
  std::function<absl::Status(const EpochRow&)> on_epoch;
  /// A run resumed: the epochs already done, from the checkpoint.
  std::function<absl::Status(const std::vector<EpochRow>&)> on_resume;
  /// A checkpoint was written.
  std::function<void()> on_checkpoint;
};

struct TrainResult {
  std::vector<EpochRow> epochs;  // every epoch, resumed ones included
  int resumed_epochs = 0;        // how many came from a checkpoint
};

/// Trains `task` on `data` (labels required unless the loss is kDistill). Errors: a
/// non-finite loss (naming epoch and step), data without labels for a labels loss, an
/// error of the task or a callback. A checkpoint whose fingerprint differs is ignored;
/// one that does not match the task's tensors is an error.
absl::StatusOr<TrainResult> Train(TrainingTask& task, const Dataset& data, const TrainOptions& options,
                                  const TrainCallbacks& callbacks);

/// The learning rate at `progress` (0..1 through training, epoch `epoch` 0-based) for a
/// base rate `base`.
double ScheduledLearningRate(const TrainOptions& options, double base, double progress, int epoch);

}  // namespace qopt
