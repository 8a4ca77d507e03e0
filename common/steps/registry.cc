#include "steps/step_list.h"
#include "steps/step_spec.h"

#include "absl/strings/str_cat.h"

namespace qopt {

#define QOPT_DECLARE_SPEC(Stem) const StepSpec& Stem##Spec();
QOPT_FOR_EACH_STEP(QOPT_DECLARE_SPEC)
#undef QOPT_DECLARE_SPEC

const std::vector<const StepSpec*>& AllStepSpecs() {
#define QOPT_LIST_SPEC(Stem) &Stem##Spec(),
  static const std::vector<const StepSpec*> kSpecs = {QOPT_FOR_EACH_STEP(QOPT_LIST_SPEC)};
#undef QOPT_LIST_SPEC
  return kSpecs;
}

const StepSpec* FindStepSpec(v1::Step::KindCase kind) {
  for (const StepSpec* spec : AllStepSpecs()) {
    if (spec->kind == kind) return spec;
  }
  return nullptr;
}

const StepSpec* FindStepSpec(const std::string& name) {
  const google::protobuf::FieldDescriptor* field = v1::Step::descriptor()->FindFieldByName(name);
  if (field == nullptr || field->containing_oneof() == nullptr) return nullptr;
  // A oneof's case values are its fields' numbers.
  return FindStepSpec(static_cast<v1::Step::KindCase>(field->number()));
}

v1::Step StepWithDefaults(const v1::Step& step) {
  v1::Step filled = step;
  const StepSpec* spec = FindStepSpec(step.kind_case());
  if (spec != nullptr && spec->fill_defaults != nullptr) spec->fill_defaults(&filled);
  return filled;
}

std::string StepName(const v1::Step& step) {
  const auto* field = step.GetReflection()->GetOneofFieldDescriptor(
      step, step.GetDescriptor()->FindOneofByName("kind"));
  return field == nullptr ? "" : field->name();
}

absl::Status CheckLayerNames(const std::string& where, const char* field,
                             const google::protobuf::RepeatedPtrField<std::string>& names) {
  for (const std::string& name : names) {
    if (name.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ": ", field, " has an empty name"));
  }
  return absl::OkStatus();
}

}  // namespace qopt
