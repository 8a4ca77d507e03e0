// analyze: where the calibrated simulation loses accuracy, layer by layer.
#include "absl/strings/str_cat.h"
#include "steps/step_spec.h"

namespace qopt {
namespace {

void FillDefaults(v1::Step* step) {
  v1::AnalyzeStep* a = step->mutable_analyze();
  if (!a->has_per_layer()) a->set_per_layer(true);
  if (a->activation_samples() == 0) a->set_activation_samples(256);
  if (a->histogram_bins() == 0) a->set_histogram_bins(64);
  if (a->prefix().empty()) a->set_prefix("analysis");
}

absl::Status Check(const std::string& where, const v1::Step& step, const StepsBefore&) {
  const v1::AnalyzeStep& a = step.analyze();
  if (a.num_batches() < 0) return absl::InvalidArgumentError(where + ": analyze.num_batches must be >= 0");
  if (a.activation_samples() < 0) {
    return absl::InvalidArgumentError(where + ": analyze.activation_samples must be >= 1");
  }
  if (a.histogram_bins() < 2 || a.histogram_bins() > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": analyze.histogram_bins must be in 2..1024, got ", a.histogram_bins()));
  }
  return absl::OkStatus();
}

std::vector<std::string> Artifacts(const v1::Step& step) {
  std::vector<std::string> names;
  for (const char* analysis : kAnalyzeArtifacts) names.push_back(AnalyzeArtifactName(step.analyze(), analysis));
  return names;
}

}  // namespace

std::string AnalyzeArtifactName(const v1::AnalyzeStep& step, const std::string& analysis) {
  return absl::StrCat(step.prefix(), "_", analysis, ".json");
}

const StepSpec& AnalyzeSpec() {
  static const StepSpec spec = [] {
    StepSpec s;
    s.kind = v1::Step::kAnalyze;
    s.requires_sim = true;
    s.reads_data = true;
    s.fill_defaults = FillDefaults;
    s.check = Check;
    s.artifacts = Artifacts;
    return s;
  }();
  return spec;
}

}  // namespace qopt
