// Recipe errors name fields as the recipe writes them (snake_case paths, the names allowed
// where a name is unknown), the same for JSON and for YAML (which the CLI turns into JSON).
#include "recipe_json.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "yaml_json.h"

namespace qopt {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// The error of a recipe that must not parse, "" if it parses.
std::string JsonError(const std::string& json) {
  absl::StatusOr<v1::Recipe> recipe = ParseRecipeJson(json);
  if (recipe.ok()) return "";
  EXPECT_EQ(recipe.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(recipe.status().message());
}

std::string YamlError(const std::string& yaml) {
  absl::StatusOr<std::string> json = cli::YamlToJson(yaml);
  if (!json.ok()) return std::string(json.status().message());
  return JsonError(*json);
}

constexpr char kAdaRoundFields[] =
    "num_iterations, num_batches, reg_param, beta_start, beta_end, warm_start, learning_rate, batch_size, "
    "quantize_activations, memory_budget_mb, skip_layers, run_all_iterations, schedule_iterations";

TEST(RecipeJson, UnknownTopLevelFieldListsTheRecipesFields) {
  const std::string json = JsonError(R"({"name": "a", "nme": "b", "steps": []})");
  EXPECT_THAT(json, StartsWith(R"(invalid recipe: unknown field "nme"; allowed: name, model, calibration_data, )"));
  EXPECT_THAT(json, HasSubstr("steps"));
  EXPECT_THAT(json, HasSubstr("evaluation_data"));
  EXPECT_EQ(YamlError("name: a\nnme: b\nsteps: []\n"), json);
}

TEST(RecipeJson, UnknownFieldInAStepNamesTheStepAndItsFields) {
  const std::string json = JsonError(R"({"steps": [{"calibrate": {}}, {"evaluate": {}},
                                                   {"adaround": {"iterations": 100}}]})");
  EXPECT_EQ(json, absl::StrCat(R"(invalid recipe: steps[2].adaround: unknown field "iterations"; allowed: )",
                               kAdaRoundFields));
  EXPECT_EQ(YamlError("steps:\n  - calibrate: {}\n  - evaluate: {}\n  - adaround:\n      iterations: 100\n"), json);
}

TEST(RecipeJson, MisspelledStepListsTheSteps) {
  const std::string json = JsonError(R"({"steps": [{"fold_batch_norm": {}}, {"calibrat": {}}]})");
  EXPECT_THAT(json, StartsWith(R"(invalid recipe: steps[1]: unknown field "calibrat"; allowed: fold_batch_norm, )"
                               "calibrate, evaluate, export, cross_layer_equalization, bias_correction, adaround, "));
  EXPECT_EQ(YamlError("steps:\n  - fold_batch_norm: {}\n  - calibrat: {}\n"), json);
}

TEST(RecipeJson, NestedUnknownFieldHasTheFullPath) {
  EXPECT_EQ(JsonError(R"({"steps": [{"auto_quant": {"adaround": {"regParam": 0.1, "beta": 4}}}]})"),
            absl::StrCat(R"(invalid recipe: steps[0].auto_quant.adaround: unknown field "beta"; allowed: )",
                         kAdaRoundFields));
  EXPECT_THAT(JsonError(R"({"calibration_data": {"preprocess": {"crop": 224}}})"),
              StartsWith(R"(invalid recipe: calibration_data.preprocess: unknown field "crop"; allowed: scale, )"));
}

TEST(RecipeJson, WrongTypeNamesTheFieldInSnakeCase) {
  const std::string json = JsonError(R"({"steps": [{"calibrate": {"num_batches": "all"}}]})");
  EXPECT_EQ(json, R"(invalid recipe: steps[0].calibrate.num_batches: expected a 32-bit integer, got "all")");
  EXPECT_EQ(YamlError("steps:\n  - calibrate: {num_batches: all}\n"), json);
  // lowerCamel names are read as protobuf reads them, and reported in snake_case.
  EXPECT_EQ(JsonError(R"({"calibrationData": {"batchSize": [16]}})"),
            "invalid recipe: calibration_data.batch_size: expected a 32-bit integer, got a list");
  EXPECT_EQ(JsonError(R"({"steps": [{"adaround": {"num_iterations": 99999999999}}]})"),
            "invalid recipe: steps[0].adaround.num_iterations: expected a 32-bit integer, got 99999999999");
  EXPECT_EQ(JsonError(R"({"calibration_data": {"seed": -1}})"),
            "invalid recipe: calibration_data.seed: expected an unsigned 64-bit integer, got -1");
  EXPECT_EQ(JsonError(R"({"steps": [{"adaround": {"reg_param": "small"}}]})"),
            R"(invalid recipe: steps[0].adaround.reg_param: expected a number, got "small")");
  EXPECT_EQ(JsonError(R"({"quantization": {"per_channel": "yes"}})"),
            R"(invalid recipe: quantization.per_channel: expected true or false, got "yes")");
  EXPECT_EQ(JsonError(R"({"name": 5})"), "invalid recipe: name: expected a string, got 5");
  EXPECT_EQ(JsonError(R"({"model": "m.pt"})"), R"(invalid recipe: model: expected an object, got "m.pt")");
  EXPECT_EQ(JsonError(R"({"steps": {"calibrate": {}}})"), "invalid recipe: steps: expected a list, got an object");
  EXPECT_EQ(JsonError(R"({"quantization": {"exclude_layers": ["fc", 3]}})"),
            "invalid recipe: quantization.exclude_layers[1]: expected a string, got 3");
  EXPECT_EQ(JsonError(R"({"steps": [{"spatial_svd": {"ratios": {"layer_ratios": {"layer1.0.conv1": "half"}}}}]})"),
            R"(invalid recipe: steps[0].spatial_svd.ratios.layer_ratios["layer1.0.conv1"]: expected a number, got "half")");
  EXPECT_EQ(JsonError("[1]"), "invalid recipe: expected an object, got a list");
}

TEST(RecipeJson, TwoStepsInOneItem) {
  const std::string json = JsonError(R"({"steps": [{"calibrate": {}, "evaluate": {}}]})");
  EXPECT_EQ(json, "invalid recipe: steps[0]: calibrate and evaluate are alternatives; set one");
  EXPECT_EQ(YamlError("steps:\n  - calibrate: {}\n    evaluate: {}\n"), json);
}

TEST(RecipeJson, AcceptsWhatProtobufsJsonMappingAccepts) {
  absl::StatusOr<v1::Recipe> recipe = ParseRecipeJson(R"({
    "name": "r", "numThreads": "4", "time_limit_seconds": 1e3,
    "calibration_data": {"max_samples": "-5", "seed": "7", "shuffle": "true", "preprocess": {"scale": "0.5"}},
    "evaluation_data": null,
    "steps": [{"adaround": {"reg_param": "NaN", "beta_start": "Infinity", "num_iterations": 1.0}},
              {"calibrate": null}]})");
  ASSERT_TRUE(recipe.ok()) << recipe.status();
  EXPECT_EQ(recipe->num_threads(), 4);
  EXPECT_EQ(recipe->time_limit_seconds(), 1000);
  EXPECT_EQ(recipe->calibration_data().max_samples(), -5);
  EXPECT_TRUE(recipe->calibration_data().shuffle());
  EXPECT_EQ(recipe->steps(0).adaround().num_iterations(), 1);
  EXPECT_EQ(recipe->steps_size(), 2);
}

TEST(RecipeJson, YamlNumbersAndBooleansReadAsJsonOnes) {
  absl::StatusOr<std::string> json = cli::YamlToJson(
      "num_threads: 4\ncalibration_data: {batch_size: 32, shuffle: true, preprocess: {mean: [0.5], std: [0.25]}}\n"
      "steps:\n  - qat: {learning_rate: 1e-4, epochs: 2}\n");
  ASSERT_TRUE(json.ok()) << json.status();
  absl::StatusOr<v1::Recipe> recipe = ParseRecipeJson(*json);
  ASSERT_TRUE(recipe.ok()) << recipe.status();
  EXPECT_EQ(recipe->calibration_data().batch_size(), 32);
  EXPECT_DOUBLE_EQ(recipe->steps(0).qat().learning_rate(), 1e-4);
}

TEST(RecipeJson, TextThatIsNotJsonGetsTheParsersError) {
  EXPECT_THAT(JsonError(R"({"steps": [{"calibrate": {}}])"), StartsWith("invalid recipe: "));
}

}  // namespace
}  // namespace qopt
