// The trainer's options, shared by the qat and fine_tune steps (their messages name them
// alike): defaults in place of unset fields, and range checks.
#pragma once

#include <initializer_list>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "recipe_check.h"
#include "status.h"

namespace qopt {

/// InvalidArgument "<where>: <step>.<field> '<value>' is not one of a, b, c" unless
/// `value` is allowed.
absl::Status CheckOneOf(const std::string& where, const std::string& field, const std::string& value,
                        std::initializer_list<const char*> allowed);

/// Defaults of the options every training step has; `sgd_learning_rate` is the step's
/// own (Adam's is a tenth of it).
template <typename Step>
void FillTrainingDefaults(Step* q, int epochs, double sgd_learning_rate) {
  if (!q->has_epochs()) q->set_epochs(epochs);
  if (q->batch_size() == 0) q->set_batch_size(64);
  if (q->optimizer().empty()) q->set_optimizer("sgd");
  if (!q->has_learning_rate()) q->set_learning_rate(q->optimizer() == "adam" ? sgd_learning_rate / 10 : sgd_learning_rate);
  if (!q->has_momentum()) q->set_momentum(q->optimizer() == "sgd" ? 0.9 : 0.0);
  if (q->schedule().empty()) q->set_schedule("cosine");
  if (q->step_epochs() == 0) q->set_step_epochs(1);
  if (q->step_gamma() == 0) q->set_step_gamma(0.1);
  if (q->loss().empty()) q->set_loss("labels");
  if (q->temperature() == 0) q->set_temperature(2.0);
  if (!q->has_distill_weight()) q->set_distill_weight(0.5);
}

/// Range checks of those options (defaults filled in); errors read "<where>: <name>.<field> ...".
template <typename Step>
absl::Status CheckTrainingOptions(const std::string& where, const char* name, const Step& q) {
  auto invalid = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", name, ".", what));
  };
  auto field = [&](const char* f) { return absl::StrCat(name, ".", f); };
  if (q.epochs() < 1 || q.epochs() > 1000) return invalid(absl::StrCat("epochs must be in 1..1000, got ", q.epochs()));
  if (q.batch_size() < 1 || q.batch_size() > 65536) {
    return invalid(absl::StrCat("batch_size must be in 1..65536, got ", q.batch_size()));
  }
  RETURN_IF_ERROR(CheckOneOf(where, field("optimizer"), q.optimizer(), {"sgd", "adam"}));
  RETURN_IF_ERROR(CheckOneOf(where, field("schedule"), q.schedule(), {"cosine", "step", "constant"}));
  RETURN_IF_ERROR(CheckOneOf(where, field("loss"), q.loss(), {"labels", "distill", "both"}));
  if (!(q.learning_rate() > 0 && q.learning_rate() <= 10)) {
    return invalid(absl::StrCat("learning_rate must be in (0, 10], got ", q.learning_rate()));
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
  if (q.has_data()) RETURN_IF_ERROR(CheckData(absl::StrCat(where, ": ", name, ".data"), q.data()));
  return absl::OkStatus();
}

}  // namespace qopt
