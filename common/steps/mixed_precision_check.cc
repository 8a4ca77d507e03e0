// mixed_precision: a bitwidth candidate per quantizer group, the lowest bit-ops within an
// allowed drop.
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "recipe_check.h"
#include "status.h"
#include "steps/step_spec.h"

namespace qopt {
namespace {

void FillDefaults(v1::Step* step) {
  v1::MixedPrecisionStep* m = step->mutable_mixed_precision();
  if (m->candidates().empty()) {
    for (const auto& [a, p] : {std::pair{8, 8}, {8, 4}, {16, 8}}) {
      v1::BitwidthCandidate* c = m->add_candidates();
      c->set_activation_bits(a);
      c->set_param_bits(p);
    }
  }
  if (m->allowed_drop() == 0) m->set_allowed_drop(0.01);
  if (m->prefix().empty()) m->set_prefix("mixed_precision");
}

absl::Status Check(const std::string& where, const v1::Step& step, const StepsBefore& before) {
  const v1::MixedPrecisionStep& m = step.mixed_precision();
  const std::string at = where + ": mixed_precision";
  if (before.rounded) {
    return absl::InvalidArgumentError(absl::StrCat(
        at, " must come before adaround and auto_quant, which learn the weights' rounding for the bitwidths they see"));
  }
  std::set<std::pair<int, int>> seen;
  for (int i = 0; i < m.candidates_size(); ++i) {
    const v1::BitwidthCandidate& c = m.candidates(i);
    for (const auto& [field, bits] : {std::pair<const char*, int>{"activation_bits", c.activation_bits()},
                                      {"param_bits", c.param_bits()}}) {
      if (bits < 2 || bits > 16) {
        return absl::InvalidArgumentError(
            absl::StrCat(at, ".candidates[", i, "].", field, " must be in 2..16, got ", bits));
      }
    }
    if (!seen.insert({c.activation_bits(), c.param_bits()}).second) {
      return absl::InvalidArgumentError(absl::StrCat(at, ".candidates[", i, "] repeats W", c.param_bits(), "A",
                                                     c.activation_bits()));
    }
  }
  if (m.candidates_size() < 2) {
    return absl::InvalidArgumentError(at + ".candidates: give at least two to choose between");
  }
  if (!(m.allowed_drop() > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(at, ".allowed_drop must be > 0, got ", m.allowed_drop()));
  }
  if (m.num_batches() < 0) return absl::InvalidArgumentError(at + ".num_batches must be >= 0");
  if (m.curve_points() < 0 || m.curve_points() > 64) {
    return absl::InvalidArgumentError(absl::StrCat(at, ".curve_points must be in 0..64, got ", m.curve_points()));
  }
  if (m.has_data()) RETURN_IF_ERROR(CheckData(at + ".data", m.data()));
  return absl::OkStatus();
}

std::vector<std::string> Artifacts(const v1::Step& step) {
  return {MixedPrecisionConfigName(step.mixed_precision()), MixedPrecisionResultsName(step.mixed_precision())};
}

}  // namespace

std::string MixedPrecisionConfigName(const v1::MixedPrecisionStep& step) {
  return absl::StrCat(step.prefix(), "_config.json");
}

std::string MixedPrecisionResultsName(const v1::MixedPrecisionStep& step) {
  return absl::StrCat(step.prefix(), ".json");
}

const StepSpec& MixedPrecisionSpec() {
  static const StepSpec spec = [] {
    StepSpec s;
    s.kind = v1::Step::kMixedPrecision;
    s.order_rule = "Comes before `adaround` and `auto_quant`, which learn the weights' rounding for the bitwidths they see.";
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
