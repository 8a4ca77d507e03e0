// The step registry: every step recipe.proto declares has a spec, found by its kind or
// its recipe name, and each spec's defaults are what its proto comment promises.
#include "steps/step_spec.h"

#include <gtest/gtest.h>

namespace qopt {
namespace {

TEST(StepSpecTest, EveryStepOfTheProtoIsRegistered) {
  const google::protobuf::OneofDescriptor* kind = v1::Step::descriptor()->FindOneofByName("kind");
  ASSERT_NE(kind, nullptr);
  for (int i = 0; i < kind->field_count(); ++i) {
    const auto number = static_cast<v1::Step::KindCase>(kind->field(i)->number());
    const StepSpec* spec = FindStepSpec(number);
    ASSERT_NE(spec, nullptr) << kind->field(i)->name() << " has no spec in common/steps/step_list.h";
    EXPECT_EQ(spec->kind, number);
  }
  EXPECT_EQ(FindStepSpec(v1::Step::KIND_NOT_SET), nullptr);
}

TEST(StepSpecTest, FindsStepsByTheirRecipeNamesOnly) {
  ASSERT_NE(FindStepSpec("calibrate"), nullptr);
  EXPECT_EQ(FindStepSpec("calibrate")->kind, v1::Step::kCalibrate);
  ASSERT_NE(FindStepSpec("export"), nullptr) << "the recipe name, not C++'s export_";
  EXPECT_EQ(FindStepSpec("export")->kind, v1::Step::kExport);
  for (const char* name : {"", "Calibrate", "export_", "kind", "calibrate ", "no_such_step"}) {
    EXPECT_EQ(FindStepSpec(std::string(name)), nullptr) << "'" << name << "'";
  }
}

TEST(StepSpecTest, DefaultsFillOnlyUnsetOptions) {
  v1::Step step;
  step.mutable_adaround()->set_beta_end(4);
  const v1::AdaRoundStep a = StepWithDefaults(step).adaround();
  EXPECT_EQ(a.beta_start(), 20);
  EXPECT_EQ(a.beta_end(), 4);
  EXPECT_EQ(a.reg_param(), 0.01);
  EXPECT_EQ(a.memory_budget_mb(), 1024);
  EXPECT_EQ(a.num_iterations(), 0) << "AdaRound picks iterations per layer bitwidth";

  v1::Step exported;
  exported.mutable_export_();
  const v1::ExportStep e = StepWithDefaults(exported).export_();
  EXPECT_TRUE(e.encodings() && e.torchscript());
  EXPECT_EQ(e.prefix(), "model");
  exported.mutable_export_()->set_encodings(true);
  EXPECT_FALSE(StepWithDefaults(exported).export_().torchscript()) << "naming one artifact exports only it";

  v1::Step bc;
  bc.mutable_bias_correction();
  EXPECT_EQ(StepWithDefaults(bc).bias_correction().num_batches(), 16);
  EXPECT_EQ(StepWithDefaults(bc).bias_correction().mode(), "empirical");
}

TEST(StepSpecTest, StepsSayWhatTheyNeedAndChange) {
  EXPECT_TRUE(FindStepSpec(v1::Step::kCalibrate)->calibrates);
  EXPECT_FALSE(FindStepSpec(v1::Step::kCalibrate)->requires_sim);
  for (auto kind : {v1::Step::kAdaround, v1::Step::kBiasCorrection, v1::Step::kEvaluate}) {
    EXPECT_TRUE(FindStepSpec(kind)->requires_sim) << kind;
  }
  for (auto kind : {v1::Step::kFoldBatchNorm, v1::Step::kCrossLayerEqualization}) {
    EXPECT_TRUE(FindStepSpec(kind)->invalidates_sim) << kind;
  }
}

}  // namespace
}  // namespace qopt
