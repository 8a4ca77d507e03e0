// export: writes the model (and the simulation's encodings, when there is one).
#include "steps/step_spec.h"

namespace qopt {
namespace {

// A step that names neither artifact wants both.
void FillDefaults(v1::Step* step) {
  v1::ExportStep* e = step->mutable_export_();
  if (!e->encodings() && !e->torchscript()) {
    e->set_encodings(true);
    e->set_torchscript(true);
  }
  if (e->prefix().empty()) e->set_prefix("model");
}

}  // namespace

const StepSpec& ExportSpec() {
  static const StepSpec spec = [] {
    StepSpec s;
    s.kind = v1::Step::kExport;
    s.fill_defaults = FillDefaults;
    return s;
  }();
  return spec;
}

}  // namespace qopt
