// What a report says about its run beyond the figures: the header (model and data as the
// caller named them, their hashes, qopt's version, times, the quantization actually used),
// the export step's check of the file it wrote, and warnings about choices made on the
// evaluation data.
#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "recipe/runner.h"
#include "recipe_json.h"
#include "sha256.h"
#include "small_cnn_fixture.h"
#include "test_util.h"

namespace qopt {
namespace {

using ::qopt::testing::IsOk;
using ::qopt::testing::SmallCnnRecipe;
using ::qopt::testing::SourcePath;
using ::qopt::testing::TempDir;

absl::StatusOr<RunSummary> RunJob(const std::string& recipe_json, const TempDir& dir) {
  auto recipe = ParseRecipeJson(recipe_json);
  if (!recipe.ok()) return recipe.status();
  RunOptions options;
  options.out_dir = dir.File("out");
  options.worker_id = "test-worker";
  return RunRecipe(*recipe, options);
}

TEST(ReportHeaderTest, NamesTheInputsTheVersionTheTimesAndTheQuantizationUsed) {
  TempDir dir;
  // 4-bit weights, with fc2 left in floating point.
  auto run = RunJob(SmallCnnRecipe(R"({"param_bitwidth": 4, "per_channel": true, "exclude_layers": ["fc2"]})",
                                R"([{"fold_batch_norm": {}}, {"calibrate": {}}, {"evaluate": {}}, {"export": {}}])"),
                 dir);
  ASSERT_THAT(run, IsOk());
  const v1::Report& r = run->report;
  EXPECT_EQ(r.model(), "small_cnn.pt");
  auto digest = Sha256File(SourcePath("zoo/small_cnn.pt"));
  ASSERT_THAT(digest, IsOk());
  EXPECT_EQ(r.model_sha256(), digest->sha256);
  ASSERT_EQ(r.datasets_size(), 2);
  EXPECT_EQ(r.datasets(0).role(), "calibration_data");
  EXPECT_EQ(r.datasets(0).name(), "train-images-idx3-ubyte.gz");
  EXPECT_EQ(r.datasets(1).role(), "evaluation_data");
  EXPECT_EQ(r.datasets(1).sha256().size(), 64u);
  EXPECT_EQ(r.datasets(1).labels_sha256().size(), 64u);
  EXPECT_EQ(r.worker_id(), "test-worker");
  EXPECT_EQ(r.qopt_version().rfind("0.1.0+", 0), 0u) << r.qopt_version();
  EXPECT_GT(r.started_unix_ms(), 0);
  EXPECT_LE(r.started_unix_ms(), r.finished_unix_ms());
  EXPECT_GT(r.wall_seconds(), 0.0);
  EXPECT_LE(r.wall_seconds(), (r.finished_unix_ms() - r.started_unix_ms()) / 1000.0 + 0.01);

  // The settings with their defaults, the built-in config, and every quantizer as used.
  const v1::ResolvedQuantization& q = r.quantization();
  EXPECT_EQ(q.param_bitwidth(), 4);
  EXPECT_EQ(q.activation_bitwidth(), 8);
  EXPECT_EQ(q.param_calibration(), "min_max");
  EXPECT_EQ(q.activation_calibration(), "sqnr");
  EXPECT_TRUE(q.config().fields().count("defaults"));
  ASSERT_EQ(q.exclude_layers_size(), 1);
  int weights = 0, outputs = 0;
  for (const v1::QuantizerSetting& s : q.quantizers()) {
    EXPECT_NE(s.layer(), "fc2") << "an excluded layer has no quantizers";
    if (s.tensor() == "weight") {
      ++weights;
      EXPECT_EQ(s.bitwidth(), 4) << s.layer();
      EXPECT_TRUE(s.per_channel() && s.symmetric()) << s.layer();
    } else if (s.tensor() == "output") {
      ++outputs;
      EXPECT_EQ(s.bitwidth(), 8) << s.layer();
      EXPECT_EQ(s.calibration(), "sqnr") << s.layer();
    }
  }
  EXPECT_GT(weights, 0);
  EXPECT_GT(outputs, 0);
  EXPECT_TRUE(r.warnings().empty());

  // The export step ran the written model.pt beside the simulation: the same outputs, bit
  // for bit, and so the same top-1, which the metrics state beside the simulation's.
  const v1::StepReport& exported = r.steps(3);
  ASSERT_EQ(exported.step(), "export");
  EXPECT_EQ(exported.figures().at("verified_samples"), 500);
  EXPECT_EQ(exported.figures().at("differing_outputs"), 0);
  EXPECT_EQ(exported.figures().at("max_abs_diff"), 0);
  EXPECT_EQ(r.metrics().at("exported_top1"), r.metrics().at("top1"));
}

// With only unlabelled calibration data the export check compares outputs and scores
// nothing, even where the recipe names a metric for its evaluations.
TEST(ReportHeaderTest, ExportCheckOfUnlabelledDataComparesOutputsOnly) {
  TempDir dir;
  auto run = RunJob(absl::StrCat(R"({"name": "unlabelled", "model": {"path": ")", SourcePath("zoo/small_cnn.pt"),
                                 R"("}, "metric": "top1", "num_threads": 2, "calibration_data": {
      "path": "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", "max_samples": 128,
      "batch_size": 64, "preprocess": {"mean": [0.286], "std": [0.353]}},
      "steps": [{"calibrate": {}}, {"export": {}}]})"),
                    dir);
  ASSERT_THAT(run, IsOk());
  const v1::StepReport& exported = run->report.steps(1);
  ASSERT_EQ(exported.step(), "export");
  EXPECT_EQ(exported.figures().at("verified_samples"), 128);
  EXPECT_EQ(exported.figures().at("differing_outputs"), 0);
  EXPECT_FALSE(exported.figures().count("exported_top1"));
}

TEST(ReportHeaderTest, ExportCheckNeedsTheTorchScriptFile) {
  auto recipe = ParseRecipeJson(SmallCnnRecipe("{}", R"([{"export": {"onnx": true, "verify": true}}])"));
  ASSERT_THAT(recipe, IsOk());
  TempDir dir;
  RunOptions options;
  options.out_dir = dir.File("out");
  auto run = RunRecipe(*recipe, options);
  ASSERT_FALSE(run.ok());
  EXPECT_NE(std::string(run.status().message()).find("export.verify checks the TorchScript file"), std::string::npos)
      << run.status();
}

constexpr char kTrainImages[] = R"("path": "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz",
    "labels_path": "/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz",
    "preprocess": {"mean": [0.286], "std": [0.353]})";

// mixed_precision chooses bitwidths, and reports how many samples it chose them on.
std::string SearchRecipe(bool with_validation) {
  std::string recipe = SmallCnnRecipe(
      R"({"per_channel": true})",
      R"([{"fold_batch_norm": {}}, {"calibrate": {}}, {"mixed_precision": {"candidates": [
          {"activation_bits": 8, "param_bits": 8}, {"activation_bits": 8, "param_bits": 4}]}}, {"evaluate": {}}])");
  if (with_validation) {
    // Held-out training images: not the calibration images (shuffled, another seed).
    recipe.insert(recipe.rfind('}'), absl::StrCat(R"(, "validation_data": {)", kTrainImages,
                                                  R"(, "max_samples": 300, "shuffle": true, "seed": 7, "batch_size": 100})"));
  }
  return recipe;
}

TEST(ValidationDataTest, ChoicesAreMadeOnItAndWithoutItTheReportWarns) {
  TempDir with_dir, without_dir;
  auto with = RunJob(SearchRecipe(true), with_dir);
  ASSERT_THAT(with, IsOk());
  EXPECT_EQ(with->report.steps(2).figures().at("eval_samples"), 300);
  EXPECT_TRUE(with->report.warnings().empty());
  // The final figure is still on the evaluation data.
  EXPECT_EQ(with->report.metrics().at("eval_samples"), 500);
  ASSERT_EQ(with->report.datasets_size(), 3);
  EXPECT_EQ(with->report.datasets(2).role(), "validation_data");

  auto without = RunJob(SearchRecipe(false), without_dir);
  ASSERT_THAT(without, IsOk());
  EXPECT_EQ(without->report.steps(2).figures().at("eval_samples"), 500);
  ASSERT_EQ(without->report.warnings_size(), 1);
  EXPECT_NE(without->report.warnings(0).find("mixed_precision's choice of bitwidths was made on evaluation_data"),
            std::string::npos)
      << without->report.warnings(0);
}

TEST(ValidationDataTest, AutoQuantWithoutItWarns) {
  TempDir dir;
  // An allowed drop the first stage meets: batch-norm folding with plain calibration.
  auto run = RunJob(SmallCnnRecipe("{}", R"([{"auto_quant": {"allowed_drop": 0.5}}, {"evaluate": {}}])"), dir);
  ASSERT_THAT(run, IsOk());
  ASSERT_EQ(run->report.warnings_size(), 1);
  EXPECT_NE(run->report.warnings(0).find("auto_quant's choice of stage"), std::string::npos) << run->report.warnings(0);
}

}  // namespace
}  // namespace qopt
