// fold_batch_norm: each batch norm folded into the conv / linear before it.
#include "absl/strings/str_cat.h"
#include "passes/batch_norm_fold.h"
#include "recipe/steps/run_context.h"
#include "status.h"

namespace qopt {

absl::Status RunFoldBatchNormStep(const v1::Step&, RunContext& run) {
  ASSIGN_OR_RETURN(auto folded, FoldBatchNorms(*run.graph));
  v1::StepReport& part = run.part();
  for (const auto& f : folded) {
    v1::LayerRow* row = part.add_layers();
    row->set_layer(f.layer);
    (*row->mutable_labels())["batch_norm"] = f.batch_norm;
  }
  (*part.mutable_figures())["folded"] = folded.size();
  return run.Log(absl::StrCat("fold_batch_norm: ", folded.size(), " batch norms folded"));
}

}  // namespace qopt
