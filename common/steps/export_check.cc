// export: writes the model (and the simulation's encodings, when there is one).
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
    s.artifacts = Artifacts;
    return s;
  }();
  return spec;
}

}  // namespace qopt
