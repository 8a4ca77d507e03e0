// The auto_quant step (AIMET AutoQuant's idea): batch-norm folding with plain calibration,
// then cross-layer equalization with high-bias absorption, then AdaRound on the better of
// the two, each evaluated; the first stage within the allowed drop wins, else the best.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "eval/evaluate.h"
#include "ir/graph.h"
#include "quant/quantsim.h"
#include "techniques/adaround.h"

namespace qopt {

struct AutoQuantInputs {
  /// The model every candidate starts from (a clone each), on the run's device.
  const Graph* model = nullptr;
  QuantSimOptions sim_options;
  std::vector<at::Tensor> calibration;  // model inputs
  const std::vector<Batch>* evaluation = nullptr;
  size_t eval_batches = 0;
  /// The figure the drop is measured on; auto tells it from the data.
  TaskMetric metric = TaskMetric::kAuto;
  /// In the figure's units: a fraction for top1 and miou, dB for psnr.
  double allowed_drop = 0.01;
  AdaRoundOptions adaround;
  /// Progress inside a stage (fraction of the whole step); non-OK stops.
  std::function<absl::Status(double fraction, const std::string& message)> progress;
  /// A result line per stage.
  std::function<absl::Status(const std::string& line, const Figures& figures)> log;
};

struct AutoQuantStage {
  std::string name;  // "fold_batch_norm+calibrate", "+cross_layer_equalization", "+adaround"
  Figures figures;
  double drop = 0.0;  // float figure minus simulated figure
  double seconds = 0.0;
};

struct AutoQuantResult {
  std::unique_ptr<Graph> graph;
  std::unique_ptr<QuantSim> sim;  // refers to *graph
  std::vector<AutoQuantStage> stages;
  std::string kept;    // the chosen stage's name
  std::string figure;  // "top1" or "top1_agreement"
};

absl::StatusOr<AutoQuantResult> RunAutoQuant(const AutoQuantInputs& in);

}  // namespace qopt
