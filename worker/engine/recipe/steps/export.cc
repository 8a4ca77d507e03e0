// export: the model as TorchScript with fake-quant ops, the simulation's encodings in
// AIMET's format when there is a simulation, and the model as ONNX with QDQ pairs.
#include <optional>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "eval/metrics.h"
#include "export/encodings_json.h"
#include "export/onnx_export.h"
#include "export/torchscript_export.h"
#include "ir/interpreter.h"
#include "ir/shape_inference.h"
#include "recipe/steps/run_context.h"
#include "status.h"
#include "steps/step_spec.h"

namespace qopt {
namespace {

bool HasData(const v1::DataRef& ref) { return !ref.path().empty() || !ref.name().empty(); }

// The written TorchScript file loaded back as a user loads it and run on the evaluation
// data beside what the run computes (the simulation, or the floating-point model when
// nothing was calibrated), so the report's figures are shown to hold for the file itself.
absl::Status VerifyTorchScript(const v1::ExportStep& e, const std::string& name, RunContext& run) {
  ASSIGN_OR_RETURN(const ModelFn exported, LoadTorchScript(run.ArtifactPath(name), run.device()));
  ASSIGN_OR_RETURN(const std::vector<Batch>* data, run.Evaluation());
  const size_t n = Limit(e.verify_batches(), data->size());
  std::optional<Interpreter> float_model;
  if (!run.sim) float_model.emplace(*run.graph);
  // Both scored by the run's metric, so the file's figure sits beside the run's own.
  TaskMeter computed_meter(run.metric()), file_meter(run.metric());
  double max_abs_diff = 0.0;
  int64_t differing = 0, outputs = 0, samples = 0;
  for (size_t b = 0; b < n; ++b) {
    const Batch& batch = (*data)[b];
    ASSIGN_OR_RETURN(const at::Tensor computed,
                     run.sim ? run.sim->Forward(batch.inputs) : float_model->Forward(batch.inputs));
    ASSIGN_OR_RETURN(const at::Tensor file, exported(batch.inputs));
    if (!file.sizes().equals(computed.sizes())) {
      return absl::InternalError(absl::StrCat("export: ", name, " gives outputs of shape ", c10::str(file.sizes()),
                                              ", the run ", c10::str(computed.sizes())));
    }
    const at::Tensor same = file.eq(computed).logical_or(file.isnan().logical_and(computed.isnan()));
    differing += file.numel() - same.sum().item<int64_t>();
    outputs += file.numel();
    samples += batch.inputs.size(0);
    if (file.numel() > 0) max_abs_diff = std::max(max_abs_diff, (file - computed).abs().max().item<double>());
    // Unlabelled data (calibration data standing in for evaluation data) is compared
    // output for output only: a metric the recipe names needs labels, not the check.
    if (batch.labels) {
      RETURN_IF_ERROR(computed_meter.Add(computed, batch.labels));
      RETURN_IF_ERROR(file_meter.Add(file, batch.labels));
    }
    RETURN_IF_ERROR(run.Progress(static_cast<double>(b + 1) / n, absl::StrCat("verify ", name, ": batch ", b + 1, "/", n)));
  }
  auto& figures = *run.part().mutable_figures();
  figures["verified_samples"] = static_cast<double>(samples);
  figures["max_abs_diff"] = max_abs_diff;
  figures["differing_outputs"] = static_cast<double>(differing);
  figures["outputs"] = static_cast<double>(outputs);
  const std::string computed_name = run.sim ? "simulation" : "floating-point model";
  std::string line = absl::StrCat("export: ", name, " loaded with torch.jit.load and run on ", n, " evaluation batches: ");
  if (differing == 0) {
    absl::StrAppend(&line, "outputs bit-identical to the ", computed_name, "'s");
  } else {
    absl::StrAppendFormat(&line, "%d of %d outputs differ from the %s's (at most %.3g)", differing, outputs,
                          computed_name, max_abs_diff);
  }
  Figures logged = {{"max_abs_diff", max_abs_diff}, {"differing_outputs", static_cast<double>(differing)}};
  if (const std::optional<TaskMetric> metric = file_meter.metric()) {
    const std::string figure = TaskFigureName(*metric), exported = "exported_" + figure;
    std::map<std::string, double> scored;
    file_meter.Report("exported_", scored);
    computed_meter.Report("", scored);
    for (const auto& [key, value] : scored) figures[key] = value;
    logged[exported] = scored[exported];
    // Beside the last evaluation's figure in the run's metrics, when both saw the same samples.
    if (auto it = run.metrics.find("eval_samples"); it != run.metrics.end() && it->second == samples) {
      run.metrics[exported] = scored[exported];
    }
    absl::StrAppendFormat(&line, "; %s %.4f (%s %.4f)", figure, scored[exported], computed_name, scored[figure]);
  }
  return run.Log(line, logged);
}

}  // namespace

absl::Status RunExportStep(const v1::Step& step, RunContext& run) {
  const v1::ExportStep& e = step.export_();
  if (e.torchscript()) {
    const std::string name = ExportTorchScriptName(e);
    RETURN_IF_ERROR(ExportTorchScript(*run.graph, run.sim.get(), run.ArtifactPath(name)));
    run.AddArtifact(name);
    const v1::Recipe& r = run.recipe();
    if (e.verify() && (HasData(r.calibration_data()) || HasData(r.evaluation_data()))) {
      RETURN_IF_ERROR(VerifyTorchScript(e, name, run));
    }
  }
  if (e.encodings() && run.sim) RETURN_IF_ERROR(run.WriteArtifact(ExportEncodingsName(e), EncodingsToJson(*run.sim)));
  if (e.onnx()) {
    ASSIGN_OR_RETURN(const std::vector<int64_t> shape, run.InputShape());
    RETURN_IF_ERROR(Annotate(InferShapes(*run.graph, {shape}), "export: ONNX needs the model's shapes"));
    const std::string name = ExportOnnxName(e);
    ASSIGN_OR_RETURN(const OnnxExport info, ExportOnnx(*run.graph, run.sim.get()));
    // Written into the run's staging folder: a step that fails leaves neither file.
    RETURN_IF_ERROR(run.WriteArtifact(name, info.model));
    if (run.sim) RETURN_IF_ERROR(run.WriteArtifact(name + ".encodings", info.encodings));
    // The report says how the ONNX file quantizes, and which quantizers needed a fallback.
    RETURN_IF_ERROR(SetDetails({{"onnx", {{"file", name},
                                          {"opset", kOnnxOpset},
                                          {"activation_quantizers", info.activation_quantizers},
                                          {"weight_quantizers", info.weight_quantizers},
                                          {"fallbacks", info.fallbacks}}}},
                               &run.part()));
    if (!info.fallbacks.empty()) {
      RETURN_IF_ERROR(run.Log(absl::StrCat("export: ", info.fallbacks.size(), " ONNX quantizers written with a fallback (",
                                           info.fallbacks.front(), info.fallbacks.size() > 1 ? "; ..." : "",
                                           "); all are listed in the report's export details")));
    }
  }
  return run.Log(absl::StrCat("export: ", absl::StrJoin(run.artifacts(), ", ")));
}

}  // namespace qopt
