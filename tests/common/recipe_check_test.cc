// Recipe checks shared by the engine and the server: each malformed recipe is rejected
// with a message that names the field.
#include "recipe_check.h"

#include <google/protobuf/text_format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace qopt {
namespace {

using ::testing::HasSubstr;

v1::Recipe Parse(const std::string& text) {
  v1::Recipe r;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &r)) << text;
  return r;
}

constexpr char kGood[] = R"pb(
  model { path: "m.pt" }
  calibration_data { path: "d.npy" batch_size: 8 }
  quantization { param_bitwidth: 4 activation_bitwidth: 8 activation_calibration: "tf_enhanced" }
  steps { fold_batch_norm {} }
  steps { calibrate {} }
  steps { evaluate {} }
  steps { export {} }
)pb";

// The good recipe with `extra` merged over it (sub-messages merge, repeated fields append).
absl::Status Check(const std::string& extra) {
  v1::Recipe r = Parse(kGood);
  EXPECT_TRUE(google::protobuf::TextFormat::MergeFromString(extra, &r)) << extra;
  return CheckRecipe(r);
}

TEST(RecipeCheckTest, AcceptsAWellFormedRecipe) {
  EXPECT_TRUE(CheckRecipe(Parse(kGood)).ok()) << CheckRecipe(Parse(kGood));
  EXPECT_TRUE(Check(R"pb(device: "cuda:1")pb").ok());
  v1::Recipe named = Parse(kGood);
  named.mutable_calibration_data()->clear_path();
  named.mutable_calibration_data()->set_name("fashion");
  EXPECT_TRUE(CheckRecipe(named).ok()) << "a dataset record name stands in for a path";
}

TEST(RecipeCheckTest, RejectsMalformedRecipesNamingTheField) {
  const std::pair<const char*, const char*> cases[] = {
      {R"pb(quantization { param_bitwidth: 1 })pb", "quantization.param_bitwidth must be in 2..16"},
      {R"pb(quantization { activation_bitwidth: 17 })pb", "quantization.activation_bitwidth"},
      {R"pb(quantization { param_calibration: "entropy" })pb", "quantization.param_calibration: unknown calibration method 'entropy'"},
      {R"pb(quantization { percentile: 40 })pb", "quantization.percentile must be in (50, 100]"},
      {R"pb(quantization { exclude_layers: "" })pb", "exclude_layers has an empty name"},
      {R"pb(calibration_data { preprocess { channels: 2 } })pb", "calibration_data.preprocess"},
      {R"pb(evaluation_data { batch_size: -1 })pb", "evaluation_data: batch_size and max_samples must be >= 0"},
      {R"pb(evaluation_data { preprocess { std: 0 } })pb", "evaluation_data.preprocess.std must be > 0"},
      {R"pb(calibration_data { format: "csv" })pb", "calibration_data.format 'csv'"},
      {R"pb(device: "tpu")pb", "device 'tpu' is not cpu or cuda:N"},
      {R"pb(device: "cuda:x")pb", "device 'cuda:x'"},
      {R"pb(num_threads: -2)pb", "num_threads must be >= 0"},
      {R"pb(steps { fold_batch_norm {} })pb", "steps[4]: fold_batch_norm must come before calibrate"},
      {R"pb(steps {})pb", "steps[4]: step names no operation"},
      {R"pb(steps { calibrate { num_batches: -1 } })pb", "steps[4]: calibrate must come before calibrate"},
      {R"pb(steps { cross_layer_equalization {} })pb", "steps[4]: cross_layer_equalization must come before calibrate"},
      {R"pb(steps { bias_correction { mode: "magic" } })pb", "bias_correction.mode 'magic' is not empirical or analytical"},
      {R"pb(steps { bias_correction { skip_layers: "" } })pb", "bias_correction.skip_layers has an empty name"},
      {R"pb(steps { adaround { num_iterations: -5 } })pb", "steps[4]: adaround: num_iterations"},
      {R"pb(steps { adaround { beta_start: 2 beta_end: 20 } })pb", "beta is annealed from beta_start down to beta_end"},
      {R"pb(steps { adaround { warm_start: 1.5 } })pb", "warm_start must be in [0, 1)"},
      {R"pb(steps { adaround { reg_param: -1 } })pb", "reg_param and learning_rate must be >= 0"},
      {R"pb(steps { adaround { schedule_iterations: -1 } })pb", "schedule_iterations must be >= 0"},
      {R"pb(steps { adaround { run_all_iterations: true schedule_iterations: 500 } })pb",
       "with run_all_iterations the annealing spans num_iterations"},
      {R"pb(steps { auto_quant {} })pb", "auto_quant does its own folding, equalization and calibration"},
      {R"pb(time_limit_seconds: -1)pb", "time_limit_seconds must be >= 0"},
      // Issue 11: an export prefix is a file name inside the job's folder, never a path.
      {R"pb(steps { export { prefix: "../../etc/x" } })pb", "steps[4]: artifact '../../etc/x.pt' is not a plain file name"},
      {R"pb(steps { export { prefix: "/tmp/x" } })pb", "contains a path separator"},
      {R"pb(steps { export { prefix: "a\\b" } })pb", "contains a path separator"},
      {R"pb(steps { export { prefix: ".hidden" } })pb", "starts with '.'"},
      {R"pb(steps { export { prefix: "a\nb" } })pb", "control character"},
      // Two exports of the same names cannot both be moved into the output folder.
      {R"pb(steps { export {} })pb", "steps[4]: export writes model.pt, which steps[3] already writes"},
      {R"pb(steps { export { encodings: true prefix: "model" } })pb", "writes model.encodings, which steps[3]"},
  };
  for (const auto& [extra, message] : cases) {
    const absl::Status s = Check(extra);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << extra << " -> " << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(message)) << extra;
  }
}

TEST(RecipeCheckTest, ExportsOfDistinctNamesMayFollowEachOther) {
  EXPECT_TRUE(Check(R"pb(steps { export { prefix: "second" } })pb").ok());
  // The same prefix is fine when the two steps write different artifacts.
  v1::Recipe r = Parse(kGood);
  r.mutable_steps(3)->mutable_export_()->set_torchscript(true);
  r.add_steps()->mutable_export_()->set_encodings(true);
  EXPECT_TRUE(CheckRecipe(r).ok()) << CheckRecipe(r);
}

TEST(RecipeCheckTest, StepsNeedWhatComesBeforeThem) {
  EXPECT_THAT(std::string(CheckRecipe(Parse(R"pb(model { path: "m" })pb")).message()), HasSubstr("no steps"));
  EXPECT_THAT(std::string(CheckRecipe(Parse(R"pb(model { path: "m" } calibration_data { path: "d" }
                                                  steps { evaluate {} })pb")).message()),
              HasSubstr("steps[0]: evaluate needs a calibrate step before it"));
  EXPECT_THAT(std::string(CheckRecipe(Parse(R"pb(model { path: "m" } steps { calibrate {} })pb")).message()),
              HasSubstr("recipe needs calibration data"));
  EXPECT_TRUE(CheckRecipe(Parse(R"pb(model { path: "m" } steps { export {} })pb")).ok())
      << "export alone needs no data";
}

TEST(RecipeCheckTest, PostTrainingTechniquesInTheirPlace) {
  const v1::Recipe flow = Parse(R"pb(
    model { path: "m" } calibration_data { path: "d" }
    steps { fold_batch_norm {} } steps { cross_layer_equalization {} } steps { calibrate {} }
    steps { adaround { num_iterations: 100 } } steps { bias_correction { mode: "analytical" } }
    steps { evaluate {} } steps { export {} })pb");
  EXPECT_TRUE(CheckRecipe(flow).ok()) << CheckRecipe(flow);
  EXPECT_THAT(std::string(CheckRecipe(Parse(R"pb(model { path: "m" } calibration_data { path: "d" }
                                                  steps { adaround {} })pb")).message()),
              HasSubstr("steps[0]: adaround needs a calibrate step before it"));
  EXPECT_THAT(std::string(CheckRecipe(Parse(R"pb(model { path: "m" } calibration_data { path: "d" }
                                                  steps { bias_correction {} })pb")).message()),
              HasSubstr("steps[0]: bias_correction needs a calibrate step before it"));
  const v1::Recipe automatic = Parse(R"pb(model { path: "m" } calibration_data { path: "d" }
                                          steps { auto_quant { allowed_drop: 0.01 } } steps { evaluate {} })pb");
  EXPECT_TRUE(CheckRecipe(automatic).ok()) << CheckRecipe(automatic);
  EXPECT_THAT(std::string(CheckRecipe(Parse(R"pb(model { path: "m" } calibration_data { path: "d" }
                                                  steps { auto_quant {} } steps { adaround {} })pb")).message()),
              HasSubstr("adaround cannot be combined with auto_quant"));
  EXPECT_THAT(std::string(CheckRecipe(Parse(R"pb(model { path: "m" } calibration_data { path: "d" }
                                                  steps { auto_quant { allowed_drop: 2 } })pb")).message()),
              HasSubstr("allowed_drop is a fraction in [0, 1)"));
}

// Issue 12: bad QAT options are rejected at submit, naming the option.
TEST(RecipeCheckTest, QatOptionsInTheirPlace) {
  EXPECT_TRUE(Check(R"pb(steps { qat {} })pb").ok()) << Check(R"pb(steps { qat {} })pb");
  EXPECT_TRUE(Check(R"pb(steps { qat { epochs: 2 optimizer: "adam" range_learning: "lsq" loss: "distill" } })pb").ok());
  const std::pair<const char*, const char*> cases[] = {
      {R"pb(steps { qat { epochs: 0 } })pb", "steps[4]: qat.epochs must be in 1..1000, got 0"},
      {R"pb(steps { qat { learning_rate: -0.1 } })pb", "qat.learning_rate must be in (0, 10], got -0.1"},
      {R"pb(steps { qat { range_learning_rate: 0 } })pb", "qat.range_learning_rate must be in (0, 10]"},
      {R"pb(steps { qat { batch_size: -4 } })pb", "qat.batch_size must be in 1..65536"},
      {R"pb(steps { qat { optimizer: "lamb" } })pb", "qat.optimizer 'lamb' is not one of sgd, adam"},
      {R"pb(steps { qat { schedule: "linear" } })pb", "qat.schedule 'linear' is not one of cosine, step, constant"},
      {R"pb(steps { qat { range_learning: "tf" } })pb", "qat.range_learning 'tf' is not one of off, aimet, lsq"},
      {R"pb(steps { qat { loss: "mse" } })pb", "qat.loss 'mse' is not one of labels, distill, both"},
      {R"pb(steps { qat { momentum: 1.5 } })pb", "qat.momentum must be in [0, 1)"},
      {R"pb(steps { qat { optimizer: "adam" momentum: 0.9 } })pb", "momentum applies to sgd only"},
      {R"pb(steps { qat { temperature: -1 } })pb", "qat.temperature must be in (0, 100]"},
      {R"pb(steps { qat { loss: "both" distill_weight: 2 } })pb", "qat.distill_weight must be in [0, 1]"},
      {R"pb(steps { qat { step_gamma: 3 } })pb", "qat.step_gamma must be in (0, 1]"},
      {R"pb(steps { qat { random_crop_padding: -1 } })pb", "qat.random_crop_padding must be in 0..64"},
      {R"pb(steps { qat { data { format: "csv" } } })pb", "steps[4]: qat.data.format 'csv'"},
  };
  for (const auto& [extra, message] : cases) {
    const absl::Status s = Check(extra);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << extra << " -> " << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(message)) << extra;
  }
  EXPECT_THAT(std::string(CheckRecipe(Parse(R"pb(model { path: "m" } calibration_data { path: "d" }
                                                  steps { qat {} })pb")).message()),
              HasSubstr("steps[0]: qat needs a calibrate step before it"));
  EXPECT_THAT(std::string(CheckRecipe(Parse(R"pb(model { path: "m" } calibration_data { path: "d" }
                                                  steps { calibrate {} } steps { qat {} })pb")).message()),
              HasSubstr("steps[1]: qat trains the batch-norm-folded model: add fold_batch_norm before calibrate"));
  const v1::Recipe after_auto_quant = Parse(R"pb(model { path: "m" } calibration_data { path: "d" }
                                                 steps { auto_quant {} } steps { qat {} })pb");
  EXPECT_TRUE(CheckRecipe(after_auto_quant).ok()) << "QAT after PTQ, as AIMET recommends";
}

// A recipe with the compression steps before quantization: compress, fine-tune, calibrate.
std::string CompressionMessage(const std::string& steps) {
  return std::string(CheckRecipe(Parse(R"pb(model { path: "m" } calibration_data { path: "d" } )pb" + steps)).message());
}

TEST(RecipeCheckTest, CompressionOptionsInTheirPlace) {
  EXPECT_EQ(CompressionMessage(R"pb(steps { fold_batch_norm {} } steps { spatial_svd {} }
                                    steps { channel_pruning { ratios { target_ratio: 0.7 } } }
                                    steps { weight_svd { ratios { selection: "manual" layer_ratios { key: "fc" value: 0.5 } } } }
                                    steps { fine_tune { loss: "distill" } } steps { calibrate {} } steps { export {} })pb"),
            "");
  EXPECT_THAT(CompressionMessage(R"pb(steps { calibrate {} } steps { spatial_svd {} })pb"),
              HasSubstr("steps[1]: spatial_svd must come before calibrate"));
  EXPECT_THAT(CompressionMessage(R"pb(steps { calibrate {} } steps { fine_tune {} })pb"),
              HasSubstr("steps[1]: fine_tune must come before calibrate"));
  EXPECT_THAT(CompressionMessage(R"pb(steps { weight_svd { ratios { target_ratio: 1.5 } } })pb"),
              HasSubstr("steps[0]: weight_svd.ratios.target_ratio must be in (0, 1]"));
  EXPECT_THAT(CompressionMessage(R"pb(steps { weight_svd { ratios { target_ratio: -0.1 } } })pb"),
              HasSubstr("target_ratio must be in (0, 1]"));
  EXPECT_THAT(CompressionMessage(R"pb(steps { spatial_svd { ratios { cost_metric: "flops" } } })pb"),
              HasSubstr("spatial_svd.ratios.cost_metric 'flops' is not one of macs, memory"));
  EXPECT_THAT(CompressionMessage(R"pb(steps { spatial_svd { ratios { selection: "manual" } } })pb"),
              HasSubstr("layer_ratios is empty"));
  EXPECT_THAT(CompressionMessage(R"pb(steps { spatial_svd { ratios { layer_ratios { key: "a" value: 0 } } } })pb"),
              HasSubstr("layer_ratios[a] must be in (0, 1]"));
  EXPECT_THAT(CompressionMessage(R"pb(steps { spatial_svd { ratios { layer_ratios { key: "a" value: 0.5 }
                                                                      exclude_layers: "a" } } })pb"),
              HasSubstr("exclude_layers and layer_ratios both name a"));
  EXPECT_THAT(CompressionMessage(R"pb(steps { spatial_svd { ratios { num_candidates: 1 } } })pb"),
              HasSubstr("num_candidates must be in 2..100"));
  EXPECT_THAT(CompressionMessage(R"pb(steps { channel_pruning { num_reconstruction_samples: -5 } })pb"),
              HasSubstr("num_reconstruction_samples must be in 1..1000000"));
  EXPECT_THAT(CompressionMessage(R"pb(steps { spatial_svd { multiplicity: -1 } })pb"),
              HasSubstr("spatial_svd.multiplicity must be >= 1"));
  EXPECT_THAT(CompressionMessage(R"pb(steps { fine_tune { optimizer: "lion" } })pb"),
              HasSubstr("fine_tune.optimizer 'lion' is not one of sgd, adam"));
  EXPECT_THAT(CompressionMessage(R"pb(steps { fine_tune { epochs: 0 } })pb"),
              HasSubstr("fine_tune.epochs must be in 1..1000"));
  // Two greedy steps of one kind would both write its eval dictionary.
  EXPECT_THAT(CompressionMessage(R"pb(steps { spatial_svd {} } steps { spatial_svd {} })pb"),
              HasSubstr("writes spatial_svd_eval_scores.json"));
}

TEST(RecipeCheckTest, TechniqueNamesTheWorkSteps) {
  EXPECT_EQ(RecipeTechnique(Parse(kGood)), "fold_batch_norm+calibrate");
  EXPECT_EQ(RecipeTechnique(Parse(R"pb(steps { export {} })pb")), "export");
  EXPECT_EQ(RecipeTechnique(Parse(R"pb(steps { calibrate {} } steps { evaluate {} } steps { calibrate {} })pb")),
            "calibrate");
}

}  // namespace
}  // namespace qopt
