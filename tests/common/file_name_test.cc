// Artifact names and export prefixes: plain file names only (issue 11).
#include "file_name.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace qopt {
namespace {

using ::testing::HasSubstr;

TEST(FileNameTest, AcceptsPlainNames) {
  for (const char* name : {"model.pt", "report.json", "resnet18_w4a8.encodings", "a", "x..y", "ünïcode.pt"}) {
    EXPECT_TRUE(CheckPlainFileName("artifact", name).ok()) << name;
  }
}

TEST(FileNameTest, RejectsPathsAndHiddenNames) {
  const std::pair<std::string, const char*> cases[] = {
      {"", "is empty"},
      {"../x", "starts with '.'"},
      {"..", "starts with '.'"},
      {".", "starts with '.'"},
      {"/etc/passwd", "path separator"},
      {"a/b", "path separator"},
      {"a\\b", "path separator"},
      {std::string("a\0b", 3), "control character"},
      {"a\nb", "control character"},
      {std::string(256, 'x'), "longer than 255 bytes"},
  };
  for (const auto& [name, why] : cases) {
    const absl::Status s = CheckPlainFileName("artifact", name);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << name;
    EXPECT_THAT(std::string(s.message()), HasSubstr(why)) << name;
    EXPECT_THAT(std::string(s.message()), HasSubstr("artifact '")) << name;
  }
}

}  // namespace
}  // namespace qopt
