// Helpers shared by the engine benchmarks: medians of timed runs, and failing loudly.
#pragma once

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace qopt::bench {

inline double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// On error: the message on stderr and exit 1, since a benchmark has no one to report to.
inline void Check(const absl::Status& s) {
  if (!s.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
    std::exit(1);
  }
}

/// The value, or (as above) the error and exit 1.
template <typename T>
T Check(absl::StatusOr<T> s) {
  Check(s.status());
  return std::move(*s);
}

}  // namespace qopt::bench
