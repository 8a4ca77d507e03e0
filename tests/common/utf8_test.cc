// UTF-8 repair of text bound for protobuf string fields (issue 11: a worker's Fail with a
// raw byte in its error could never be delivered).
#include "utf8.h"

#include <gtest/gtest.h>

#include "qopt/v1/report.pb.h"

namespace qopt {
namespace {

constexpr char kReplacement[] = "\xEF\xBF\xBD";

TEST(Utf8Test, KeepsValidText) {
  for (const char* text : {"", "plain ascii", "caf\xC3\xA9", "\xE2\x82\xAC 5", "\xF0\x9F\x98\x80"}) {
    EXPECT_EQ(SanitizeUtf8(text), text);
  }
}

TEST(Utf8Test, ReplacesEachMalformedByte) {
  EXPECT_EQ(SanitizeUtf8("npy header \x93NUMPY"), std::string("npy header ") + kReplacement + "NUMPY");
  EXPECT_EQ(SanitizeUtf8("\xC0\xAF"), std::string(kReplacement) + kReplacement) << "overlong '/'";
  EXPECT_EQ(SanitizeUtf8("\xED\xA0\x80"), std::string(kReplacement) + kReplacement + kReplacement) << "surrogate";
  EXPECT_EQ(SanitizeUtf8("\xF4\x90\x80\x80").substr(0, 3), kReplacement) << "above U+10FFFF";
  EXPECT_EQ(SanitizeUtf8("end \xE2\x82"), std::string("end ") + kReplacement + kReplacement) << "truncated";
  EXPECT_EQ(SanitizeUtf8(std::string("\xFF\x00x", 3)), std::string(kReplacement) + std::string("\0x", 2));
}

TEST(Utf8Test, RepairsEveryStringFieldOfAMessage) {
  v1::Report report;
  v1::StepReport* step = report.add_steps();
  step->set_step("bad \xFF step");
  v1::StepReport* good = report.add_steps();
  good->set_step("calibrate");
  SanitizeUtf8Fields(&report);
  EXPECT_EQ(report.steps(0).step(), std::string("bad ") + kReplacement + " step");
  EXPECT_EQ(report.steps(1).step(), "calibrate");
  std::string wire;
  ASSERT_TRUE(report.SerializeToString(&wire));
  v1::Report parsed;
  EXPECT_TRUE(parsed.ParseFromString(wire)) << "a repaired message parses";
}

}  // namespace
}  // namespace qopt
