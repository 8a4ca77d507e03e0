// adaround: learns each weight's rounding on the calibrated simulation.
#include "steps/adaround_check.h"

#include "absl/strings/str_cat.h"
#include "status.h"
#include "steps/step_spec.h"

namespace qopt {

void FillAdaRoundDefaults(v1::AdaRoundStep* a) {
  if (a->reg_param() == 0) a->set_reg_param(0.01);
  if (a->beta_start() == 0) a->set_beta_start(20.0);
  if (a->beta_end() == 0) a->set_beta_end(2.0);
  if (a->warm_start() == 0) a->set_warm_start(0.2);
  if (a->learning_rate() == 0) a->set_learning_rate(1e-3);
  if (a->memory_budget_mb() == 0) a->set_memory_budget_mb(1024);
  if (!a->run_all_iterations() && a->schedule_iterations() == 0) a->set_schedule_iterations(2000);
}

absl::Status CheckAdaRoundOptions(const std::string& where, const v1::AdaRoundStep& a) {
  if (a.num_iterations() < 0 || a.num_batches() < 0 || a.batch_size() < 0 || a.memory_budget_mb() < 0 ||
      a.schedule_iterations() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": num_iterations, num_batches, batch_size, memory_budget_mb and schedule_iterations must be >= 0"));
  }
  if (a.run_all_iterations() && a.schedule_iterations() > 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": schedule_iterations is the annealing length of layers that stop on convergence; with "
               "run_all_iterations the annealing spans num_iterations (drop one of the two)"));
  }
  if (a.reg_param() < 0 || a.learning_rate() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": reg_param and learning_rate must be >= 0"));
  }
  if (!(a.beta_end() > 0 && a.beta_start() >= a.beta_end())) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": beta is annealed from beta_start down to beta_end > 0, got ",
                                                   a.beta_start(), " -> ", a.beta_end()));
  }
  if (!(a.warm_start() >= 0 && a.warm_start() < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": warm_start must be in [0, 1), got ", a.warm_start()));
  }
  return CheckLayerNames(where, "skip_layers", a.skip_layers());
}

namespace {

absl::Status Check(const std::string& where, const v1::Step& step, const StepsBefore&) {
  return CheckAdaRoundOptions(where + ": adaround", step.adaround());
}

}  // namespace

const StepSpec& AdaRoundSpec() {
  static const StepSpec spec = [] {
    StepSpec s;
    s.kind = v1::Step::kAdaround;
    s.requires_sim = true;
    s.part_of_auto_quant = true;
    s.learns_rounding = true;
    s.reads_data = true;
    s.fill_defaults = [](v1::Step* step) { FillAdaRoundDefaults(step->mutable_adaround()); };
    s.check = Check;
    return s;
  }();
  return spec;
}

}  // namespace qopt
