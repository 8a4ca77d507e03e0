// Shared test helpers: fixture paths and absl::Status matchers.
#pragma once

#include <cstdlib>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qopt::testing {

/// A file made by tests/fixtures/make_fixtures.py (ctest sets QOPT_FIXTURES).
/// The environment variables override the build's paths.
inline std::string Fixture(const std::string& name) {
  const char* dir = std::getenv("QOPT_FIXTURES");
  return std::string(dir ? dir : QOPT_TEST_FIXTURES_DIR) + "/" + name;
}

inline std::string SourcePath(const std::string& rel) {
  const char* dir = std::getenv("QOPT_SOURCE_DIR");
  return std::string(dir ? dir : QOPT_TEST_SOURCE_DIR) + "/" + rel;
}

inline std::string Python() {
  const char* p = std::getenv("QOPT_PYTHON");
  return p ? p : QOPT_TEST_PYTHON;
}

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

MATCHER(IsOk, "is OK") {
  const absl::Status& s = GetStatus(arg);
  if (!s.ok()) *result_listener << "status: " << s.ToString();
  return s.ok();
}

MATCHER_P2(StatusIs, code, message_matcher, "") {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "status: " << s.ToString();
  return s.code() == code &&
         ::testing::Matches(message_matcher)(std::string(s.message()));
}

/// A fresh temporary directory, removed at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace qopt::testing
