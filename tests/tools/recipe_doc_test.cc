// The recipe reference (docs/recipe.md) cannot fall silent or wrong: every message a
// recipe can hold, and every field of it, has a comment in recipe.proto; defaults come
// from the step registry; comment text is made safe for Markdown tables.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "proto_comments.h"
#include "qopt/v1/recipe.pb.h"
#include "recipe_markdown.h"

namespace qopt::recipe_doc {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

ProtoComments RecipeComments() {
  absl::StatusOr<ProtoComments> comments = ProtoComments::Load(QOPT_RECIPE_DESCRIPTORS);
  EXPECT_TRUE(comments.ok()) << comments.status();
  return *std::move(comments);
}

TEST(RecipeDoc, EveryMessageAndFieldOfARecipeHasAComment) {
  const ProtoComments comments = RecipeComments();
  std::vector<std::string> missing;
  for (const google::protobuf::Descriptor* type : ReachableMessages(*v1::Recipe::descriptor())) {
    if (comments.Of(*type).empty()) missing.push_back(type->full_name());
    for (int i = 0; i < type->field_count(); ++i) {
      const google::protobuf::FieldDescriptor& field = *type->field(i);
      // A member of a oneof of messages (a step) is described by its message.
      if (field.real_containing_oneof() != nullptr && field.message_type() != nullptr) continue;
      if (comments.Of(field).empty()) missing.push_back(field.full_name());
    }
  }
  EXPECT_THAT(missing, IsEmpty()) << "give each a comment in proto/qopt/v1/recipe.proto (its meaning, default and "
                                     "allowed values); docs/recipe.md shows it";
}

TEST(RecipeDoc, ReachesEveryStepsOptionsAndTheSharedMessages) {
  std::vector<std::string> names;
  for (const google::protobuf::Descriptor* type : ReachableMessages(*v1::Recipe::descriptor())) {
    names.push_back(type->name());
  }
  EXPECT_EQ(names.front(), "Recipe");
  for (const char* name : {"DataRef", "Preprocess", "Step", "AdaRoundStep", "CompressionRatios", "BitwidthCandidate"}) {
    EXPECT_THAT(names, ::testing::Contains(name));
  }
  EXPECT_THAT(names, ::testing::Not(::testing::Contains("LayerRatiosEntry")));
}

TEST(RecipeDoc, ReadsTheCommentAboveAField) {
  const ProtoComments comments = RecipeComments();
  const auto* field = v1::AdaRoundStep::descriptor()->FindFieldByName("num_iterations");
  EXPECT_THAT(comments.Of(*field), StartsWith("Adam iterations per layer"));
  EXPECT_THAT(comments.Of(*v1::AdaRoundStep::descriptor()), StartsWith("AdaRound (Nagel et al. 2020"));
}

TEST(RecipeDoc, DefaultsComeFromTheStepRegistry) {
  const std::string markdown = RecipeMarkdown(RecipeComments());
  EXPECT_THAT(markdown, HasSubstr("| `reg_param` | double | `0.01` |"));
  EXPECT_THAT(markdown, HasSubstr("| `mode` | string | `\"empirical\"` |"));
  EXPECT_THAT(markdown, HasSubstr("| `target_ratio` | double | `0.5` |"));  // CompressionRatios, via spatial_svd
  EXPECT_THAT(markdown, HasSubstr("| `num_iterations` | int32 | `0` |"));  // not filled: its zero
  EXPECT_THAT(markdown, HasSubstr("Writes `analysis_scores.json`, "));
}

TEST(RecipeDoc, StepsCarryTheirOrderRules) {
  const std::string markdown = RecipeMarkdown(RecipeComments());
  EXPECT_THAT(markdown, HasSubstr("\n### adaround\n"));
  EXPECT_THAT(markdown, HasSubstr("- Needs a calibrated simulation: comes after `calibrate`, `auto_quant` or `qat`.\n"));
  EXPECT_THAT(markdown, HasSubstr("- Cannot come after `auto_quant`, which runs it itself.\n"));
}

TEST(RecipeDoc, TableCellsAreSafeMarkdown) {
  const std::string markdown = RecipeMarkdown(RecipeComments());
  // DataRef.format lists its values with '|', which would end the cell.
  EXPECT_THAT(markdown, HasSubstr("auto (default: by content) \\| idx \\| npy"));
  EXPECT_THAT(markdown, ::testing::Not(HasSubstr(" <prefix>_")));  // read as an HTML tag
}

TEST(RecipeDoc, ADescriptorSetThatCannotBeReadIsAnError) {
  const std::string path = ::testing::TempDir() + "/not_descriptors.pb";
  std::ofstream(path) << "not a descriptor set";
  EXPECT_FALSE(ProtoComments::Load(path).ok());
  EXPECT_FALSE(ProtoComments::Load(path + ".missing").ok());
  std::remove(path.c_str());
}

}  // namespace
}  // namespace qopt::recipe_doc
