// fold_batch_norm: each batch norm folded into the conv / linear before it.
#include "absl/strings/str_cat.h"
#include "passes/batch_norm_fold.h"
#include "recipe/steps/run_context.h"
#include "status.h"

namespace qopt {

absl::Status RunFoldBatchNormStep(const v1::Step&, RunContext& run) {
  ASSIGN_OR_RETURN(auto folded, FoldBatchNorms(*run.graph));
  auto pairs = nlohmann::ordered_json::array();
  for (const auto& f : folded) pairs.push_back({f.batch_norm, f.layer});
  run.part()["folded"] = pairs;
  return run.Log(absl::StrCat("fold_batch_norm: ", folded.size(), " batch norms folded"));
}

}  // namespace qopt
