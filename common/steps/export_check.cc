// export: writes the model (and the simulation's encodings, when there is one).
#include "absl/strings/str_cat.h"
#include "steps/step_spec.h"

namespace qopt {
namespace {

// A step that names neither artifact wants both.
void FillDefaults(v1::Step* step) {
  v1::ExportStep* e = step->mutable_export_();
  if (!e->encodings() && !e->torchscript() && !e->onnx()) {
    e->set_encodings(true);
    e->set_torchscript(true);
  }
  if (e->prefix().empty()) e->set_prefix("model");
  if (!e->has_verify()) e->set_verify(e->torchscript());
}

absl::Status Check(const std::string& where, const v1::Step& step, const StepsBefore&) {
  const v1::ExportStep& e = step.export_();
  if (e.verify() && !e.torchscript()) {
    return absl::InvalidArgumentError(where + ": export.verify checks the TorchScript file; set torchscript too");
  }
  if (e.verify_batches() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": export.verify_batches must be >= 0, got ", e.verify_batches()));
  }
  return absl::OkStatus();
}

std::vector<std::string> Artifacts(const v1::Step& step) {
  const v1::ExportStep& e = step.export_();
  std::vector<std::string> names;
  if (e.torchscript()) names.push_back(ExportTorchScriptName(e));
  if (e.encodings()) names.push_back(ExportEncodingsName(e));
  if (e.onnx()) {
    names.push_back(ExportOnnxName(e));
    names.push_back(ExportOnnxName(e) + ".encodings");
  }
  return names;
}

}  // namespace

std::string ExportTorchScriptName(const v1::ExportStep& step) { return step.prefix() + ".pt"; }
std::string ExportEncodingsName(const v1::ExportStep& step) { return step.prefix() + ".encodings"; }
std::string ExportOnnxName(const v1::ExportStep& step) { return step.prefix() + ".onnx"; }

const StepSpec& ExportSpec() {
  static const StepSpec spec = [] {
    StepSpec s;
    s.kind = v1::Step::kExport;
    s.fill_defaults = FillDefaults;
    s.check = Check;
    s.artifacts = Artifacts;
    return s;
  }();
  return spec;
}

}  // namespace qopt
