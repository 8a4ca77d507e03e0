#include "quant/encoding.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace qopt {

absl::Status QuantSpec::Validate() const {
  if (bitwidth < 2 || bitwidth > 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("bitwidth ", bitwidth, " is out of range: supported are 2 to 16 bits"));
  }
  return absl::OkStatus();
}

int64_t QuantSpec::NumSteps() const {
  const int64_t steps = (int64_t{1} << bitwidth) - 1;
  return symmetric && strict_symmetric ? steps - 1 : steps;
}

bool Encoding::operator==(const Encoding& o) const {
  return bitwidth == o.bitwidth && symmetric == o.symmetric && scale == o.scale &&
         offset == o.offset && num_steps == o.num_steps;
}

Encoding ComputeEncoding(double min, double max, const QuantSpec& spec) {
  Encoding e;
  e.bitwidth = spec.bitwidth;
  e.symmetric = spec.symmetric;
  e.num_steps = spec.NumSteps();
  min = std::min(min, 0.0);
  max = std::max(max, 0.0);
  // A range of (nearly) zero width would give scale 0; AIMET widens it the same way.
  constexpr double kMinRange = 0.01;
  if (max - min < kMinRange) max = min + kMinRange;

  if (spec.symmetric) {
    if (spec.unsigned_symmetric && min >= 0.0) {
      e.scale = static_cast<float>(max / static_cast<double>(e.num_steps));
      e.offset = 0;
    } else {
      const double abs_max = std::max(std::abs(min), std::abs(max));
      const double positive_steps = std::floor(static_cast<double>(e.num_steps) / 2.0);
      e.scale = static_cast<float>(abs_max / positive_steps);
      e.offset = -static_cast<int64_t>(std::ceil(static_cast<double>(e.num_steps) / 2.0));
    }
  } else {
    e.scale = static_cast<float>((max - min) / static_cast<double>(e.num_steps));
    e.offset = static_cast<int64_t>(std::round(min / e.scale));
    e.offset = std::clamp<int64_t>(e.offset, -e.num_steps, 0);
  }
  e.min = static_cast<double>(e.offset) * e.scale;
  e.max = static_cast<double>(e.offset + e.num_steps) * e.scale;
  return e;
}

absl::StatusOr<Encoding> EncodingFromScaleOffset(int bitwidth, bool symmetric, double scale,
                                                 int64_t offset) {
  QuantSpec spec;
  spec.bitwidth = bitwidth;
  if (auto s = spec.Validate(); !s.ok()) return s;
  // The scale is stored as float32 and divides tensors: it must be a normal float32
  // (a subnormal one overflows 1 / scale, and rounding a tiny double gives 0).
  if (!(scale >= std::numeric_limits<float>::min() && scale <= std::numeric_limits<float>::max())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "encoding scale must be a positive float32 in [", std::numeric_limits<float>::min(), ", ",
        std::numeric_limits<float>::max(), "], got ", scale));
  }
  Encoding e;
  e.bitwidth = bitwidth;
  e.symmetric = symmetric;
  e.num_steps = spec.NumSteps();
  // A strict-symmetric grid is recognisable by its offset: -(2^(b-1) - 1).
  if (symmetric && offset == -((int64_t{1} << (bitwidth - 1)) - 1)) e.num_steps -= 1;
  if (offset > 0 || offset < -e.num_steps) {
    return absl::InvalidArgumentError(absl::StrCat("encoding offset ", offset,
                                                   " is outside [", -e.num_steps, ", 0]"));
  }
  e.scale = static_cast<float>(scale);
  e.offset = offset;
  e.min = static_cast<double>(offset) * e.scale;
  e.max = static_cast<double>(offset + e.num_steps) * e.scale;
  return e;
}

}  // namespace qopt
