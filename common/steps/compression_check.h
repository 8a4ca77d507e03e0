// What the compression steps (spatial_svd, weight_svd, channel_pruning) share: their ratio
// selection's defaults, checks and artifact.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "qopt/v1/recipe.pb.h"
#include "status.h"
#include "steps/step_spec.h"

namespace qopt {

/// target_ratio 0.5, cost_metric "macs", num_candidates 10, selection "greedy".
void FillRatioDefaults(v1::CompressionRatios* r);

/// InvalidArgument "<where>: <step>.ratios.<field> ..." for options out of range: a
/// target or layer ratio outside (0, 1], an unknown metric or selection, manual
/// selection without layer ratios, a layer both excluded and given a ratio.
absl::Status CheckRatios(const std::string& where, const std::string& step, const v1::CompressionRatios& r);

/// The eval dictionary's artifact, "<step>_eval_scores.json", when the selection is
/// greedy; none for manual ratios.
std::vector<std::string> RatioArtifacts(const std::string& step, const v1::CompressionRatios& r);

/// The spec of a compression step whose options message `Options` (with `ratios` and
/// `multiplicity`) is reached through `Get` / `Mutable` on the step; `FillOwn` and
/// `CheckOwn` handle the method's own options. Compression changes the model, so it comes
/// before calibrate, and it reads data (scoring, reconstruction).
template <typename Options, const Options& (v1::Step::*Get)() const, Options* (v1::Step::*Mutable)(),
          void (*FillOwn)(Options*) = nullptr,
          absl::Status (*CheckOwn)(const std::string&, const Options&) = nullptr>
struct CompressionStep {
  static void Fill(v1::Step* step) {
    Options* o = (step->*Mutable)();
    FillRatioDefaults(o->mutable_ratios());
    if (o->multiplicity() == 0) o->set_multiplicity(1);
    if constexpr (FillOwn != nullptr) FillOwn(o);
  }
  static absl::Status Check(const std::string& where, const v1::Step& step, const StepsBefore&) {
    const Options& o = (step.*Get)();
    const std::string name = StepName(step);
    if (o.multiplicity() < 1) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", name, ".multiplicity must be >= 1, got ", o.multiplicity()));
    }
    if constexpr (CheckOwn != nullptr) RETURN_IF_ERROR(CheckOwn(where, o));
    return CheckRatios(where, name, o.ratios());
  }
  static std::vector<std::string> Artifacts(const v1::Step& step) {
    return RatioArtifacts(StepName(step), (step.*Get)().ratios());
  }
  static StepSpec Spec(v1::Step::KindCase kind) {
    StepSpec s;
    s.kind = kind;
    s.invalidates_sim = true;
    s.reads_data = true;
    s.fill_defaults = Fill;
    s.check = Check;
    s.artifacts = Artifacts;
    return s;
  }
};

}  // namespace qopt
