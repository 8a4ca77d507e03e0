#include "recipe/steps/run_context.h"
#include "steps/step_list.h"
#include "steps/step_spec.h"

namespace qopt {

#define QOPT_DECLARE_STEP(Stem)   \
  const StepSpec& Stem##Spec();   \
  absl::Status Run##Stem##Step(const v1::Step& step, RunContext& run);
QOPT_FOR_EACH_STEP(QOPT_DECLARE_STEP)
#undef QOPT_DECLARE_STEP

StepRun FindStepRun(v1::Step::KindCase kind) {
  struct Entry {
    v1::Step::KindCase kind;
    StepRun run;
  };
#define QOPT_LIST_STEP(Stem) Entry{Stem##Spec().kind, &Run##Stem##Step},
  static const Entry kRuns[] = {QOPT_FOR_EACH_STEP(QOPT_LIST_STEP)};
#undef QOPT_LIST_STEP
  for (const Entry& e : kRuns) {
    if (e.kind == kind) return e.run;
  }
  return nullptr;
}

}  // namespace qopt
