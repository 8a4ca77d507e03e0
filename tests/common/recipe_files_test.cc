// The recipe's file fields, found through the (qopt.v1.file) option.
#include "recipe_files.h"

#include <google/protobuf/text_format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace qopt {
namespace {

using ::testing::ElementsAre;
using ::testing::Field;

v1::Recipe Parse(const std::string& text) {
  v1::Recipe r;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &r)) << text;
  return r;
}

auto File(const std::string& field, const std::string& value) {
  return ::testing::AllOf(Field(&RecipeFile::field, field), Field(&RecipeFile::value, value));
}

TEST(RecipeFiles, ListsEveryMarkedFieldThatHasAValue) {
  const v1::Recipe r = Parse(R"pb(
    name: "not a file"
    model { path: "m.pt" name: "also not" }
    calibration_data { path: "c.npy" labels_path: "c_labels.npy" format: "npy" }
    evaluation_data { path: "e.npy" }
    quantization { config_path: "q.json" freeze_encodings_path: "f.encodings" }
  )pb");
  EXPECT_THAT(RecipeFiles(r), ElementsAre(File("model.path", "m.pt"), File("calibration_data.path", "c.npy"),
                                          File("calibration_data.labels_path", "c_labels.npy"),
                                          File("quantization.config_path", "q.json"),
                                          File("quantization.freeze_encodings_path", "f.encodings"),
                                          File("evaluation_data.path", "e.npy")));
}

TEST(RecipeFiles, EditingNeverAddsASubMessage) {
  v1::Recipe r = Parse(R"pb(model { path: "m.pt" })pb");
  ASSERT_TRUE(EditRecipeFiles(&r, [](const std::string&, std::string* v) {
    *v = "/base/" + *v;
    return absl::OkStatus();
  }).ok());
  EXPECT_EQ(r.model().path(), "/base/m.pt");
  EXPECT_FALSE(r.has_calibration_data());
  EXPECT_FALSE(r.has_quantization());
}

TEST(RecipeFiles, EditStopsAtTheFirstError) {
  v1::Recipe r = Parse(R"pb(model { path: "m.pt" } calibration_data { path: "c.npy" })pb");
  int calls = 0;
  const absl::Status s = EditRecipeFiles(&r, [&](const std::string& field, std::string*) {
    ++calls;
    return absl::NotFoundError(field);
  });
  EXPECT_EQ(s.message(), "model.path");
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace qopt
