// Runs a recipe in-process: the offline runner behind `qopt-worker run`, and the engine
// entry point for the service's workers.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "qopt/v1/recipe.pb.h"
#include "qopt/v1/report.pb.h"

namespace qopt {

struct Progress {
  int step = 0;          // 1-based index of the running step
  int num_steps = 0;
  std::string stage;     // "load", "fold_batch_norm", "calibrate", "evaluate", "export"
  double fraction = 0.0; // of the current stage, 0..1
  std::string message;   // status line ("batch 3/16") or, when `log`, a line to keep
  bool log = false;      // a result worth keeping in the job's history, not just status
  std::map<std::string, double> metrics;  // figures the step produced (evaluate: top1, ...)
  std::shared_ptr<const v1::StepReport> step_report;  // set once per step, when it finished
  /// With a log line: the report row it announces (analyze streams one per layer as it
  /// is measured, before the step's report exists).
  std::shared_ptr<const v1::LayerRow> layer_row;
};

struct RunOptions {
  /// Artifacts land here only when the whole recipe succeeds; on failure the directory is
  /// left as it was.
  std::string out_dir;
  std::function<void(const Progress&)> on_progress;
  /// Polled between batches and steps; when it returns true the run stops with
  /// absl::CancelledError and writes nothing.
  std::function<bool()> cancelled;
  /// Where steps that train (qat, fine_tune) keep their latest checkpoint, one file
  /// rewritten atomically at each epoch's end, and mixed_precision its scores so far;
  /// "" = no checkpoints. A run that finds a checkpoint there written by the same recipe
  /// resumes that step from it.
  std::string checkpoint_path;
  /// Called after each checkpoint is complete on disk (e.g. to copy it off the machine).
  std::function<void()> on_checkpoint;
  /// The service worker running the job, for the report; "" offline.
  std::string worker_id;
};

struct RunSummary {
  std::vector<std::string> artifacts;       // file names inside out_dir
  std::map<std::string, double> metrics;    // e.g. "output_sqnr_db", "top1_agreement"
  v1::Report report;
  std::string report_json;                  // the report written as report.json
};

/// Validates and runs `recipe`. Errors carry the engine's one-line explanation.
/// `num_threads` is capped at the machine's cores.
absl::StatusOr<RunSummary> RunRecipe(const v1::Recipe& recipe, const RunOptions& options);

/// OK when this build and machine can run on `device` ("cpu", "cuda:N"):
/// FailedPrecondition naming what is missing (no CUDA in the build or on the machine, or
/// fewer GPUs than N+1), InvalidArgument for a name that is no device.
absl::Status CheckDeviceAvailable(const std::string& device);

}  // namespace qopt
