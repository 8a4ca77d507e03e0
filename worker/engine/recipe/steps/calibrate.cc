// calibrate: builds the simulation the recipe's quantization settings describe and
// observes calibration batches; frozen encodings, when named, are loaded first.
#include "absl/strings/str_cat.h"
#include "export/encodings_json.h"
#include "recipe/steps/run_context.h"
#include "status.h"

namespace qopt {

absl::Status RunCalibrateStep(const v1::Step& step, RunContext& run) {
  ASSIGN_OR_RETURN(run.sim, QuantSim::Create(*run.graph, run.sim_options()));
  const std::string& frozen = run.recipe().quantization().freeze_encodings_path();
  if (!frozen.empty()) RETURN_IF_ERROR(LoadEncodingsFile(*run.sim, frozen, /*freeze=*/true));
  ASSIGN_OR_RETURN(const std::vector<Batch>* data, run.Calibration());
  const size_t n = Limit(step.calibrate().num_batches(), data->size());
  for (size_t b = 0; b < n; ++b) {
    RETURN_IF_ERROR(Annotate(run.sim->ObserveBatch({c10::IValue((*data)[b].inputs)}),
                             absl::StrCat("calibration batch ", b + 1)));
    RETURN_IF_ERROR(run.Progress(static_cast<double>(b + 1) / n, absl::StrCat("batch ", b + 1, "/", n)));
  }
  RETURN_IF_ERROR(run.sim->FinishCalibration());
  const size_t params = run.sim->param_quantizers().size(), activations = run.sim->activation_quantizers().size();
  auto& figures = *run.part().mutable_figures();
  figures["batches"] = n;
  figures["param_quantizers"] = params;
  figures["activation_quantizers"] = activations;
  return run.Log(absl::StrCat("calibrate: ", n, " batches, ", params, " parameter and ", activations,
                              " activation quantizers"));
}

}  // namespace qopt
