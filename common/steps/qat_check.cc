// qat: quantization-aware training of the calibrated, batch-norm-folded simulation.
#include "absl/strings/str_cat.h"
#include "status.h"
#include "steps/step_spec.h"
#include "steps/training_check.h"

namespace qopt {

namespace {

// AIMET's advice for QAT: a learning rate near the floating-point model's final one, a
// few epochs. 1e-3 with momentum suits SGD-trained models; Adam's steps are larger.
void FillDefaults(v1::Step* step) {
  v1::QatStep* q = step->mutable_qat();
  FillTrainingDefaults(q, /*epochs=*/3, /*sgd_learning_rate=*/1e-3);
  if (!q->has_range_learning_rate()) q->set_range_learning_rate(q->learning_rate());
  if (q->range_learning().empty()) q->set_range_learning("off");
}

absl::Status Check(const std::string& where, const v1::Step& step, const StepsBefore& before) {
  const v1::QatStep& q = step.qat();
  if (!before.folded) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": qat trains the batch-norm-folded model: add fold_batch_norm before calibrate (or use auto_quant)"));
  }
  RETURN_IF_ERROR(CheckTrainingOptions(where, "qat", q));
  RETURN_IF_ERROR(CheckOneOf(where, "qat.range_learning", q.range_learning(), {"off", "aimet", "lsq"}));
  if (!(q.range_learning_rate() > 0 && q.range_learning_rate() <= 10)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": qat.range_learning_rate must be in (0, 10], got ", q.range_learning_rate()));
  }
  return absl::OkStatus();
}

}  // namespace

const StepSpec& QatSpec() {
  static const StepSpec spec = [] {
    StepSpec s;
    s.kind = v1::Step::kQat;
    s.order_rule = "Trains the batch-norm-folded model: needs `fold_batch_norm` before `calibrate`, or `auto_quant`.";
    s.requires_sim = true;
    s.calibrates = true;
    s.reads_data = true;
    s.fill_defaults = FillDefaults;
    s.check = Check;
    return s;
  }();
  return spec;
}

}  // namespace qopt
