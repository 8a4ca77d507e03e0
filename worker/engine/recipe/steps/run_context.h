// What the steps of one recipe run share, and the signature of a step's run. Each step is
// one file beside this one (recipe/steps/<step>.cc), registered in common/steps/step_list.h.
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include <c10/core/Device.h>
#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "eval/evaluate.h"
#include "ir/graph.h"
#include "qopt/v1/recipe.pb.h"
#include "qopt/v1/report.pb.h"
#include "quant/quantsim.h"
#include "recipe/runner.h"
#include "recipe/staging.h"

namespace qopt {

class RunContext {
 public:
  RunContext(const v1::Recipe& recipe, c10::Device device, QuantSimOptions sim_options, const RunOptions& options,
             Staging* staging);

  const v1::Recipe& recipe() const { return recipe_; }
  const c10::Device& device() const { return device_; }
  const QuantSimOptions& sim_options() const { return sim_options_; }
  /// The recipe's `metric` (checked by CheckRecipe; auto when empty).
  TaskMetric metric() const { return ParseTaskMetric(recipe_.metric()).value_or(TaskMetric::kAuto); }

  /// A fresh copy of the recipe's model on the run's device.
  absl::StatusOr<std::unique_ptr<Graph>> Import() const;
  /// The calibration batches, loaded on first use.
  absl::StatusOr<const std::vector<Batch>*> Calibration();
  /// The evaluation batches (the calibration batches when the recipe names none).
  absl::StatusOr<const std::vector<Batch>*> Evaluation();
  /// The batches a step makes `choice` on ("auto_quant's choice of stage"): the recipe's
  /// validation data, or, without it, the evaluation batches, with a warning in the
  /// report that the choice was made on the data of the final figure.
  absl::StatusOr<const std::vector<Batch>*> Validation(const std::string& choice);
  /// The recipe's validation data when it has some, else the evaluation batches, without
  /// a warning: for figures that only report (training's per-epoch evaluations).
  absl::StatusOr<const std::vector<Batch>*> ValidationOrEvaluation();
  /// Batches of `ref` on the run's device (Validation(`choice`) when `ref` names no data);
  /// kept until the run ends.
  absl::StatusOr<const std::vector<Batch>*> Batches(const v1::DataRef& ref, const std::string& choice);
  /// What the report's readers should know about how the figures came about.
  const std::vector<std::string>& warnings() const { return warnings_; }
  /// A training data set, on the CPU (batches move to the device one by one): `ref`, or
  /// the calibration data when `ref` names no data.
  absl::StatusOr<Dataset> TrainingData(const v1::DataRef& ref) const;
  /// The shape of one model input (batch 1), from the calibration data (or the
  /// evaluation data when the recipe has no calibration data).
  absl::StatusOr<std::vector<int64_t>> InputShape();
  /// The inputs of the first `n` calibration batches (0 = all).
  absl::StatusOr<std::vector<at::Tensor>> CalibrationInputs(int n);

  /// Makes step `index` (1-based; 0 = loading) the one that progress is reported for and
  /// whose report part the step fills.
  void BeginStep(int index, std::string stage, v1::StepReport* part);
  /// Status of the running step; Cancelled once the caller asks to stop.
  absl::Status Progress(double fraction, std::string message);
  /// Cancelled once the caller asks to stop; reports nothing.
  absl::Status CheckCancelled() const;
  /// Where the running step keeps its checkpoint ("" = none), and the callback to run
  /// once one is written.
  const std::string& checkpoint_path() const { return options_.checkpoint_path; }
  void CheckpointWritten() const {
    if (options_.on_checkpoint) options_.on_checkpoint();
  }
  /// Identifies the running step of this recipe: a checkpoint with another fingerprint
  /// belongs to some other run.
  std::string StepFingerprint() const { return FingerprintOf(step_); }
  /// Whether the checkpoint on disk is one a later step of this recipe wrote (a job
  /// resumed past the running step): a step that keeps its own progress in the
  /// checkpoint must leave that one alone.
  bool CheckpointOfLaterStep() const;
  /// A result line for the job's history, with the figures behind it.
  absl::Status Log(std::string line, Figures figures = {});
  /// A result line that announces one row of the running step's report as soon as it is
  /// known (streamed to watchers with the line, typed).
  absl::Status LogRow(std::string line, v1::LayerRow row);
  /// The running step finished with its part of the report.
  absl::Status Finish(const v1::StepReport& part);

  /// Writes an artifact into the staging folder; it moves out when the run succeeds.
  absl::Status WriteArtifact(const std::string& name, const std::string& text);
  /// Where a step writes an artifact itself; call AddArtifact after writing it.
  std::string ArtifactPath(const std::string& name) const { return staging_->Path(name); }
  void AddArtifact(const std::string& name) { artifacts_.push_back(name); }
  const std::vector<std::string>& artifacts() const { return artifacts_; }

  /// The model the steps change, and its simulation once a step calibrated one.
  std::unique_ptr<Graph> graph;
  std::unique_ptr<QuantSim> sim;
  /// The run's headline figures (the last evaluation's).
  Figures metrics;
  /// The running step's part of the report.
  v1::StepReport& part() { return *part_; }

 private:
  absl::Status Emit(qopt::Progress progress);
  std::string FingerprintOf(int step) const;

  const v1::Recipe& recipe_;
  const c10::Device device_;
  const QuantSimOptions sim_options_;
  const RunOptions& options_;
  Staging* staging_;
  std::vector<std::string> artifacts_;
  std::vector<std::string> warnings_;
  std::vector<Batch> calibration_, evaluation_, validation_;
  std::deque<std::vector<Batch>> other_batches_;
  bool calibration_loaded_ = false, evaluation_loaded_ = false, validation_loaded_ = false;
  int step_ = 0;
  std::string stage_;
  v1::StepReport* part_ = nullptr;
};

/// Sets `part`'s details (structure that fits no figure, row or series) from JSON.
absl::Status SetDetails(const nlohmann::ordered_json& details, v1::StepReport* part);

/// The first `n` of `available` (0 = all).
size_t Limit(int n, size_t available);

/// Runs one step (its defaults filled in) on the run's model.
using StepRun = absl::Status (*)(const v1::Step& step, RunContext& run);

/// The registered run of `kind`; null when this worker lacks it.
StepRun FindStepRun(v1::Step::KindCase kind);

}  // namespace qopt
