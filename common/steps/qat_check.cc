// qat: quantization-aware training of the calibrated, batch-norm-folded simulation.
#include <initializer_list>
#include <utility>

#include "absl/strings/str_cat.h"
#include "recipe_check.h"
#include "status.h"
#include "steps/step_spec.h"

namespace qopt {
namespace {

// AIMET's advice for QAT: a learning rate near the floating-point model's final one, a
// few epochs. 1e-3 with momentum suits SGD-trained models; Adam's steps are larger.
void FillDefaults(v1::Step* step) {
  v1::QatStep* q = step->mutable_qat();
  if (!q->has_epochs()) q->set_epochs(3);
  if (q->batch_size() == 0) q->set_batch_size(64);
  if (q->optimizer().empty()) q->set_optimizer("sgd");
  if (!q->has_learning_rate()) q->set_learning_rate(q->optimizer() == "adam" ? 1e-4 : 1e-3);
  if (!q->has_range_learning_rate()) q->set_range_learning_rate(q->learning_rate());
  if (!q->has_momentum()) q->set_momentum(q->optimizer() == "sgd" ? 0.9 : 0.0);
  if (q->schedule().empty()) q->set_schedule("cosine");
  if (q->step_epochs() == 0) q->set_step_epochs(1);
  if (q->step_gamma() == 0) q->set_step_gamma(0.1);
  if (q->range_learning().empty()) q->set_range_learning("off");
  if (q->loss().empty()) q->set_loss("labels");
  if (q->temperature() == 0) q->set_temperature(2.0);
  if (!q->has_distill_weight()) q->set_distill_weight(0.5);
}

absl::Status OneOf(const std::string& where, const char* field, const std::string& value,
                   std::initializer_list<const char*> allowed) {
  for (const char* a : allowed) {
    if (value == a) return absl::OkStatus();
  }
  std::string list;
  for (const char* a : allowed) absl::StrAppend(&list, list.empty() ? "" : ", ", a);
  return absl::InvalidArgumentError(absl::StrCat(where, ": qat.", field, " '", value, "' is not one of ", list));
}

absl::Status Check(const std::string& where, const v1::Step& step, const StepsBefore& before) {
  const v1::QatStep& q = step.qat();
  auto invalid = [&](const std::string& what) { return absl::InvalidArgumentError(absl::StrCat(where, ": qat.", what)); };
  if (!before.folded) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": qat trains the batch-norm-folded model: add fold_batch_norm before calibrate (or use auto_quant)"));
  }
  if (q.epochs() < 1 || q.epochs() > 1000) return invalid(absl::StrCat("epochs must be in 1..1000, got ", q.epochs()));
  if (q.batch_size() < 1 || q.batch_size() > 65536) {
    return invalid(absl::StrCat("batch_size must be in 1..65536, got ", q.batch_size()));
  }
  RETURN_IF_ERROR(OneOf(where, "optimizer", q.optimizer(), {"sgd", "adam"}));
  RETURN_IF_ERROR(OneOf(where, "schedule", q.schedule(), {"cosine", "step", "constant"}));
  RETURN_IF_ERROR(OneOf(where, "range_learning", q.range_learning(), {"off", "aimet", "lsq"}));
  RETURN_IF_ERROR(OneOf(where, "loss", q.loss(), {"labels", "distill", "both"}));
  for (const auto& [field, lr] : {std::pair<const char*, double>{"learning_rate", q.learning_rate()},
                                  {"range_learning_rate", q.range_learning_rate()}}) {
    if (!(lr > 0 && lr <= 10)) return invalid(absl::StrCat(field, " must be in (0, 10], got ", lr));
  }
  if (!(q.momentum() >= 0 && q.momentum() < 1)) return invalid(absl::StrCat("momentum must be in [0, 1), got ", q.momentum()));
  if (q.optimizer() == "adam" && q.momentum() != 0) {
    return invalid("momentum applies to sgd only (adam keeps its own moment estimates)");
  }
  if (!(q.weight_decay() >= 0 && q.weight_decay() < 1)) {
    return invalid(absl::StrCat("weight_decay must be in [0, 1), got ", q.weight_decay()));
  }
  if (q.step_epochs() < 1) return invalid(absl::StrCat("step_epochs must be >= 1, got ", q.step_epochs()));
  if (!(q.step_gamma() > 0 && q.step_gamma() <= 1)) {
    return invalid(absl::StrCat("step_gamma must be in (0, 1], got ", q.step_gamma()));
  }
  if (!(q.temperature() > 0 && q.temperature() <= 100)) {
    return invalid(absl::StrCat("temperature must be in (0, 100], got ", q.temperature()));
  }
  if (!(q.distill_weight() >= 0 && q.distill_weight() <= 1)) {
    return invalid(absl::StrCat("distill_weight must be in [0, 1], got ", q.distill_weight()));
  }
  if (q.random_crop_padding() < 0 || q.random_crop_padding() > 64) {
    return invalid(absl::StrCat("random_crop_padding must be in 0..64, got ", q.random_crop_padding()));
  }
  if (q.max_steps_per_epoch() < 0 || q.eval_batches() < 0) {
    return invalid("max_steps_per_epoch and eval_batches must be >= 0");
  }
  if (q.has_data()) RETURN_IF_ERROR(CheckData(absl::StrCat(where, ": qat.data"), q.data()));
  return absl::OkStatus();
}

}  // namespace

const StepSpec& QatSpec() {
  static const StepSpec spec = [] {
    StepSpec s;
    s.kind = v1::Step::kQat;
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
