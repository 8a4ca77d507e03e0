// auto_quant: tries folding + calibration, then equalization, then AdaRound on fresh
// copies of the model (recipe/auto_quant.cc) and keeps the first within the allowed drop.
#include "absl/strings/str_cat.h"
#include "recipe/auto_quant.h"
#include "recipe/steps/adaround_options.h"
#include "recipe/steps/run_context.h"
#include "status.h"

namespace qopt {
namespace {

// Each stage tried, with its figures, and which one was kept.
absl::Status Describe(const AutoQuantResult& chosen, double allowed_drop, v1::StepReport* part) {
  nlohmann::ordered_json details;
  details["stages"] = nlohmann::ordered_json::array();
  for (const AutoQuantStage& st : chosen.stages) {
    nlohmann::ordered_json js = {{"stage", st.name}, {"drop", st.drop}, {"seconds", st.seconds}};
    for (const auto& [k, v] : st.figures) js[k] = v;
    details["stages"].push_back(std::move(js));
  }
  details["kept"] = chosen.kept;
  details["figure"] = chosen.figure;
  (*part->mutable_figures())["allowed_drop"] = allowed_drop;
  return SetDetails(details, part);
}

}  // namespace

absl::Status RunAutoQuantStep(const v1::Step& step, RunContext& run) {
  const v1::AutoQuantStep& aq = step.auto_quant();
  AutoQuantInputs in;
  ASSIGN_OR_RETURN(in.calibration, run.CalibrationInputs(0));
  ASSIGN_OR_RETURN(in.evaluation, run.Validation("auto_quant's choice of stage"));
  in.model = run.graph.get();
  in.sim_options = run.sim_options();
  in.eval_batches = Limit(aq.eval_batches(), in.evaluation->size());
  in.metric = run.metric();
  in.allowed_drop = aq.allowed_drop();
  in.adaround = AdaRoundOptionsFrom(aq.adaround());
  in.progress = [&](double fraction, const std::string& message) { return run.Progress(fraction, message); };
  in.log = [&](const std::string& line, const Figures& figures) { return run.Log(line, figures); };
  ASSIGN_OR_RETURN(AutoQuantResult chosen, RunAutoQuant(in));
  // The simulation refers to the graph it was made for: drop it before its graph.
  run.sim.reset();
  run.graph = std::move(chosen.graph);
  run.sim = std::move(chosen.sim);
  RETURN_IF_ERROR(Describe(chosen, in.allowed_drop, &run.part()));
  return run.Log(absl::StrCat("auto_quant: kept ", chosen.kept));
}

}  // namespace qopt
