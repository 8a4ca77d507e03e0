// bias_correction: removes the mean output shift quantized weights cause, per layer.
#include "absl/strings/str_cat.h"
#include "recipe/steps/run_context.h"
#include "status.h"
#include "techniques/bias_correction.h"

namespace qopt {

absl::Status RunBiasCorrectionStep(const v1::Step& step, RunContext& run) {
  const v1::BiasCorrectionStep& bc = step.bias_correction();
  BiasCorrectionOptions options;
  if (bc.mode() == "analytical") options.mode = BiasCorrectionOptions::Mode::kAnalytical;
  options.skip_layers.assign(bc.skip_layers().begin(), bc.skip_layers().end());
  options.on_layer = [&](int done, int total, const std::string& layer) {
    return run.Progress(static_cast<double>(done) / std::max(1, total), absl::StrCat(layer, " (", done, "/", total, ")"));
  };
  ASSIGN_OR_RETURN(const std::vector<at::Tensor> inputs, run.CalibrationInputs(bc.num_batches()));
  ASSIGN_OR_RETURN(std::vector<BiasCorrectionResult> corrected, CorrectBias(*run.graph, *run.sim, inputs, options));
  int analytical = 0;
  for (const BiasCorrectionResult& r : corrected) {
    v1::LayerRow* row = run.part().add_layers();
    row->set_layer(r.layer);
    (*row->mutable_labels())["method"] = r.method;
    (*row->mutable_figures())["mean_abs_shift"] = r.mean_abs_shift;
    analytical += r.method == "analytical";
  }
  auto& figures = *run.part().mutable_figures();
  figures["batches"] = inputs.size();
  figures["analytical"] = analytical;
  figures["empirical"] = corrected.size() - analytical;
  return run.Log(absl::StrCat("bias_correction: ", corrected.size(), " layers (", analytical, " analytical, ",
                              corrected.size() - analytical, " empirical)"));
}

}  // namespace qopt
