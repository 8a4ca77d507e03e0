// What a recipe step is, without LibTorch: where it may stand in a recipe, its options'
// defaults and their checks. The server runs these checks at submit time, the engine
// before a run; each step's spec lives in its own file (common/steps/<step>_check.cc).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "qopt/v1/recipe.pb.h"

namespace qopt {

/// What the steps before the one being checked did.
struct StepsBefore {
  bool calibrated = false;  // a calibrated simulation exists
  bool automatic = false;   // auto_quant ran, which folds, equalizes, calibrates and rounds itself
  bool folded = false;      // batch norms were folded (fold_batch_norm, or auto_quant)
  bool rounded = false;     // weights' rounding was learned for the bitwidths then (adaround, auto_quant)
};

struct StepSpec {
  v1::Step::KindCase kind = v1::Step::KIND_NOT_SET;
  /// Needs a calibrated simulation before it.
  bool requires_sim = false;
  /// Changes the model or rebuilds the simulation, so none may exist before it: "must
  /// come before calibrate".
  bool invalidates_sim = false;
  /// Leaves a calibrated simulation behind.
  bool calibrates = false;
  /// auto_quant runs this step itself, so a recipe cannot have both.
  bool part_of_auto_quant = false;
  /// auto_quant itself.
  bool automatic = false;
  /// Folds batch norms into the layers before them.
  bool folds_batch_norm = false;
  /// Learns the weights' rounding for the bitwidths the simulation has.
  bool learns_rounding = false;
  /// Reads the calibration data (or evaluation data, which defaults to it).
  bool reads_data = false;
  /// An order rule of the step's own, which its `check` enforces, in words for the recipe
  /// reference (docs/recipe.md); null when the flags above say it all.
  const char* order_rule = nullptr;
  /// Puts the step's defaults in place of unset options (zeros); the engine runs and the
  /// checks see the step this way. Null when every zero means what it says.
  void (*fill_defaults)(v1::Step* step) = nullptr;
  /// Checks the options (defaults filled in) and any order rule of the step's own;
  /// errors start with `where` ("steps[2]"). Null when there is nothing to check.
  absl::Status (*check)(const std::string& where, const v1::Step& step, const StepsBefore& before) = nullptr;
  /// The artifacts (file names in the job's output folder) the step writes, defaults
  /// filled in; the recipe check requires each to be a plain file name written by one
  /// step only. Null when the step writes none.
  std::vector<std::string> (*artifacts)(const v1::Step& step) = nullptr;
};

/// Every registered spec, in the order of common/steps/step_list.h.
const std::vector<const StepSpec*>& AllStepSpecs();

/// The registered spec of `kind`; null for KIND_NOT_SET or a step this build lacks.
const StepSpec* FindStepSpec(v1::Step::KindCase kind);

/// The registered spec of the step named `name` as in recipes ("calibrate"); null for any
/// other name, so that a name from outside (a worker's step report) can be checked.
const StepSpec* FindStepSpec(const std::string& name);

/// `step` with its spec's defaults filled in.
v1::Step StepWithDefaults(const v1::Step& step);

/// File names the export step writes (defaults filled in): the TorchScript model and the
/// encodings. The engine writes exactly these.
std::string ExportTorchScriptName(const v1::ExportStep& step);
std::string ExportEncodingsName(const v1::ExportStep& step);
/// The ONNX model (`<prefix>.onnx`); its encodings are `<prefix>.onnx.encodings`.
std::string ExportOnnxName(const v1::ExportStep& step);

/// The analyses the analyze step writes one JSON artifact each for, and the artifact's
/// name ("<prefix>_<analysis>.json", defaults filled in).
inline constexpr const char* kAnalyzeArtifacts[] = {"scores", "layer_errors", "ranges", "histograms"};
std::string AnalyzeArtifactName(const v1::AnalyzeStep& step, const std::string& analysis);

/// What the mixed_precision step writes (defaults filled in): the quantsim config that
/// reproduces its choice, and the search's results.
std::string MixedPrecisionConfigName(const v1::MixedPrecisionStep& step);
std::string MixedPrecisionResultsName(const v1::MixedPrecisionStep& step);

/// The step's operation as named in recipes ("fold_batch_norm"), "" when unset.
std::string StepName(const v1::Step& step);

/// InvalidArgument "<where>: <field> has an empty name" for an empty layer name.
absl::Status CheckLayerNames(const std::string& where, const char* field,
                             const google::protobuf::RepeatedPtrField<std::string>& names);

}  // namespace qopt
