// Error plumbing for the engine: absl::Status everywhere, and the two macros that
// Debian's Abseil (20220623) does not ship.
#pragma once

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
inline absl::Status Annotate(const absl::Status& s, absl::string_view context) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(context, ": ", s.message()));
}

}  // namespace qopt
