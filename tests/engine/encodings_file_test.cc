// Reading AIMET encodings files without a model (export/encodings_file.h).
#include "export/encodings_file.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "test_util.h"

namespace qopt {
namespace {

using ::qopt::testing::IsOk;
using ::qopt::testing::StatusIs;
using ::testing::HasSubstr;

constexpr char kEncoding[] = R"({"bitwidth": 8, "is_symmetric": "True", "offset": -127, "scale": 0.5})";

std::string File(const std::string& params, const std::string& activations) {
  return R"({"param_encodings": )" + params + R"(, "activation_encodings": )" + activations + "}";
}

TEST(EncodingsFileTest, ReadsParamsAndActivationsInFileOrder) {
  const std::string text = File(absl::StrCat(R"({"fc.weight": [)", kEncoding, ",", kEncoding, "]}"),
                                absl::StrCat(R"({"fc": {"input": {"0": )", kEncoding, R"(}, "output": {"1": [)",
                                             kEncoding, "]}}}"));
  auto file = ParseEncodingsJson(text);
  ASSERT_THAT(file, IsOk());
  ASSERT_EQ(file->params.size(), 1u);
  EXPECT_EQ(file->params[0].first, "fc.weight");
  EXPECT_EQ(file->params[0].second.size(), 2u);
  ASSERT_EQ(file->activations.size(), 2u);
  EXPECT_TRUE(file->activations[0].is_input);
  EXPECT_EQ(file->activations[1].index, 1);
  EXPECT_EQ(file->activations[1].encoding.offset, -127);
  EXPECT_FLOAT_EQ(file->activations[1].encoding.scale, 0.5);
}

// Each of these escaped the parser (an exception or undefined behaviour) or gave a
// zero scale before the encodings fuzzer found them; tests/fuzz/corpus/encodings keeps them too.
TEST(EncodingsFileTest, FuzzFoundInputsAreErrors) {
  const auto param = [](const std::string& encoding) { return File(R"({"w": )" + encoding + "}", "{}"); };
  EXPECT_THAT(ParseEncodingsJson(File("{}", R"({"a": {"output": {"0": []}}})")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("a.output.0: empty list")));
  EXPECT_THAT(ParseEncodingsJson(File(R"({"w": []})", "{}")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("param_encodings.w: empty list")));
  EXPECT_THAT(ParseEncodingsJson(param(R"({"bitwidth": 1e30, "scale": 1, "offset": 0})")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'bitwidth' must be an integer")));
  EXPECT_THAT(ParseEncodingsJson(param(R"({"bitwidth": 8.5, "scale": 1, "offset": 0})")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'bitwidth' must be an integer")));
  EXPECT_THAT(ParseEncodingsJson(param(R"({"bitwidth": 8, "scale": 1, "offset": -1e300})")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'offset' must be an integer")));
  EXPECT_THAT(ParseEncodingsJson(param(R"({"bitwidth": 8, "scale": 1, "offset": 18446744073709551615})")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'offset' must be an integer")));
  EXPECT_THAT(ParseEncodingsJson(param(R"({"bitwidth": 8, "scale": 1e-300, "offset": 0})")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("scale")));
  EXPECT_THAT(ParseEncodingsJson(param(R"({"bitwidth": 8, "scale": 1e300, "offset": 0})")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("scale")));
  EXPECT_THAT(ParseEncodingsJson(param(R"({"bitwidth": 8.0, "scale": 1, "offset": -3.0})")), IsOk());
}

}  // namespace
}  // namespace qopt
