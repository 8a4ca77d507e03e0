// Error plumbing for the engine: absl::Status everywhere, and the two macros that
// Debian's Abseil (20220623) does not ship.
#pragma once

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#define QOPT_CONCAT_INNER(a, b) a##b
#define QOPT_CONCAT(a, b) QOPT_CONCAT_INNER(a, b)

/// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                       \
  do {                                              \
    ::absl::Status qopt_status_ = (expr);           \
    if (!qopt_status_.ok()) return qopt_status_;    \
  } while (0)

#define QOPT_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(tmp).value()

/// `ASSIGN_OR_RETURN(auto x, MakeX());` unwraps an absl::StatusOr or returns its error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  QOPT_ASSIGN_OR_RETURN_IMPL(QOPT_CONCAT(qopt_statusor_, __LINE__), lhs, expr)

namespace qopt {

/// Adds context in front of an error message, keeping its code:
/// `Annotate(s, "layer1.0.conv1")` turns "bad shape" into "layer1.0.conv1: bad shape".
/// The first non-blank line of a (LibTorch) error message, for one-line errors.
inline std::string FirstLine(const std::string& text) {
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (line.find_first_not_of(" \t\r") != std::string::npos) {
      return line.substr(line.find_first_not_of(" \t\r"));
    }
    start = end + 1;
  }
  return text;
}

inline absl::Status Annotate(const absl::Status& s, absl::string_view context) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(context, ": ", s.message()));
}

}  // namespace qopt
