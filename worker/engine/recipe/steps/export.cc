// export: the model as TorchScript with fake-quant ops, the simulation's encodings in
// AIMET's format when there is a simulation, and the model as ONNX with QDQ pairs.
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "export/encodings_json.h"
#include "export/onnx_export.h"
#include "export/torchscript_export.h"
#include "ir/shape_inference.h"
#include "recipe/steps/run_context.h"
#include "status.h"
#include "steps/step_spec.h"

namespace qopt {

absl::Status RunExportStep(const v1::Step& step, RunContext& run) {
  const v1::ExportStep& e = step.export_();
  if (e.torchscript()) {
    const std::string name = ExportTorchScriptName(e);
    RETURN_IF_ERROR(ExportTorchScript(*run.graph, run.sim.get(), run.ArtifactPath(name)));
    run.AddArtifact(name);
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
