// Affine quantization encodings with AIMET's conventions: the integer grid is
// [0, 2^bitwidth - 1] shifted by `offset` (offset <= 0), real value = (q + offset) * scale,
// zero is exactly representable, offset = round(min / scale).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace qopt {

/// How an encoding's grid is laid out.
struct QuantSpec {
  int bitwidth = 8;
  bool symmetric = false;
  /// Symmetric grid without the most negative value: [-(2^(b-1)-1), 2^(b-1)-1].
  bool strict_symmetric = false;
  /// Symmetric encodings of tensors with no negative values use the unsigned grid
  /// [0, 2^b - 1] (AIMET's "unsigned_symmetric").
  bool unsigned_symmetric = true;

  absl::Status Validate() const;
  int64_t NumSteps() const;  // 2^b - 1, or 2^b - 2 when strict symmetric
};

struct Encoding {
  int bitwidth = 8;
  bool symmetric = false;
  double min = 0.0;
  double max = 0.0;
  double scale = 0.0;   // float32 value stored as double
  int64_t offset = 0;   // <= 0
  int64_t num_steps = 255;

  /// Integer range and zero point for torch.fake_quantize_per_*_affine.
  int64_t quant_min() const { return 0; }
  int64_t quant_max() const { return num_steps; }
  int64_t zero_point() const { return -offset; }
  bool operator==(const Encoding& o) const;
};

/// Encoding covering [min, max] under `spec`; the range is widened to contain zero and
/// to a minimum width so the scale is never zero.
Encoding ComputeEncoding(double min, double max, const QuantSpec& spec);

/// Rebuilds an encoding from stored fields (AIMET JSON); recomputes min/max from
/// scale/offset so the grid is exact. Fails for bitwidths outside 2..16, a scale that is not a
/// positive normal float32 (0, subnormal, above FLT_MAX, NaN) or an offset off the grid.
absl::StatusOr<Encoding> EncodingFromScaleOffset(int bitwidth, bool symmetric, double scale,
                                                 int64_t offset);

}  // namespace qopt
