// export: the model as TorchScript with fake-quant ops, and the simulation's encodings
// in AIMET's format when there is a simulation.
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "export/encodings_json.h"
#include "export/torchscript_export.h"
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
  return run.Log(absl::StrCat("export: ", absl::StrJoin(run.artifacts(), ", ")));
}

}  // namespace qopt
