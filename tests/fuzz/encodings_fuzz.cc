// An AIMET encodings file, as `calibrate.frozen_encodings` imports it; every encoding it
// accepts must describe a usable grid.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "export/encodings_file.h"

namespace {

void CheckGrid(const qopt::Encoding& e) {
  if (!(e.scale > 0) || !std::isfinite(e.scale) || e.offset > 0 || e.num_steps < 1 || e.min > e.max) {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<qopt::EncodingsFile> file =
      qopt::ParseEncodingsJson(std::string(reinterpret_cast<const char*>(data), size));
  if (!file.ok()) return 0;
  for (const auto& [name, encodings] : file->params) {
    for (const qopt::Encoding& e : encodings) CheckGrid(e);
  }
  for (const auto& a : file->activations) CheckGrid(a.encoding);
  return 0;
}
