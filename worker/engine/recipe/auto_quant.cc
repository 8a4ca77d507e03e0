#include "recipe/auto_quant.h"

#include <chrono>

#include "absl/strings/str_format.h"
#include "passes/batch_norm_fold.h"
#include "passes/cross_layer_equalization.h"
#include "status.h"

namespace qopt {
namespace {

struct Candidate {
  std::unique_ptr<Graph> graph;
  std::unique_ptr<QuantSim> sim;
  AutoQuantStage stage;
};

}  // namespace

absl::StatusOr<AutoQuantResult> RunAutoQuant(const AutoQuantInputs& in) {
  if (in.calibration.empty()) return absl::InvalidArgumentError("auto_quant needs calibration data");
  if (in.evaluation == nullptr || in.evaluation->empty()) {
    return absl::InvalidArgumentError("auto_quant needs evaluation data (or calibration data to evaluate on)");
  }
  AutoQuantResult result;
  // Stage weights in the step's progress: AdaRound is most of the time.
  constexpr double kBase = 0.1, kCle = 0.2;

  // Folds, optionally equalizes, calibrates and evaluates a fresh copy of the model.
  auto prepare = [&](bool equalize, double from) -> absl::StatusOr<Candidate> {
    const auto start = std::chrono::steady_clock::now();
    Candidate c;
    c.graph = std::make_unique<Graph>(in.model->Clone());
    RETURN_IF_ERROR(FoldBatchNorms(*c.graph).status());
    c.stage.name = "fold_batch_norm+calibrate";
    if (equalize) {
      RETURN_IF_ERROR(CrossLayerEqualize(*c.graph).status());
      c.stage.name = "fold_batch_norm+cross_layer_equalization+calibrate";
    }
    ASSIGN_OR_RETURN(c.sim, QuantSim::Create(*c.graph, in.sim_options));
    for (size_t b = 0; b < in.calibration.size(); ++b) {
      RETURN_IF_ERROR(c.sim->ObserveBatch({c10::IValue(in.calibration[b])}));
      RETURN_IF_ERROR(in.progress(from + 0.05 * (b + 1) / in.calibration.size(), c.stage.name + ": calibrating"));
    }
    RETURN_IF_ERROR(c.sim->FinishCalibration());
    c.stage.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return c;
  };
  auto evaluate = [&](Candidate& c, double at) -> absl::Status {
    ASSIGN_OR_RETURN(c.stage.figures, EvaluateSim(*c.sim, *in.evaluation, in.eval_batches, in.metric, [&](size_t done, size_t n) {
      return in.progress(at, absl::StrFormat("%s: evaluating %d/%d", c.stage.name, done, n));
    }));
    const auto [name, reference, value] = HeadlineFigure(c.stage.figures);
    result.figure = name;
    c.stage.drop = reference - value;
    result.stages.push_back(c.stage);
    return in.log(absl::StrFormat("auto_quant: %s: %s %.4f (float %.4f, drop %.4f; allowed %.4f)", c.stage.name,
                                  name, value, reference, c.stage.drop, in.allowed_drop),
                  c.stage.figures);
  };
  auto keep = [&](Candidate c) {
    result.kept = c.stage.name;
    result.graph = std::move(c.graph);
    result.sim = std::move(c.sim);
    return std::move(result);
  };

  ASSIGN_OR_RETURN(Candidate base, prepare(false, 0.0));
  RETURN_IF_ERROR(evaluate(base, kBase));
  if (base.stage.drop <= in.allowed_drop) return keep(std::move(base));

  ASSIGN_OR_RETURN(Candidate equalized, prepare(true, kBase));
  RETURN_IF_ERROR(evaluate(equalized, kCle));
  if (equalized.stage.drop <= in.allowed_drop) return keep(std::move(equalized));

  // AdaRound on the better of the two.
  Candidate best = equalized.stage.drop < base.stage.drop ? std::move(equalized) : std::move(base);
  const AutoQuantStage before = best.stage;
  const auto start = std::chrono::steady_clock::now();
  AdaRoundOptions ao = in.adaround;
  ao.on_progress = [&](const AdaRoundProgress& p) {
    return in.progress(kCle + (0.95 - kCle) * p.Fraction(), "adaround " + p.Describe());
  };
  RETURN_IF_ERROR(ApplyAdaRound(*best.graph, *best.sim, in.calibration, ao).status());
  best.stage.name = before.name + "+adaround";
  best.stage.seconds = before.seconds + std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  RETURN_IF_ERROR(evaluate(best, 0.95));
  if (best.stage.drop <= before.drop) return keep(std::move(best));
  // AdaRound made it worse: rebuild the stage it started from.
  ASSIGN_OR_RETURN(Candidate again, prepare(before.name.find("cross_layer") != std::string::npos, 0.95));
  again.stage = before;
  return keep(std::move(again));
}

}  // namespace qopt
