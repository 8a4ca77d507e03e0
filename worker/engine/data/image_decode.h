// Decoding one PNG or JPEG file into 8-bit pixels, for image-folder data sets. libpng's
// simplified API and libjpeg-turbo's TurboJPEG API do the decoding: both are fuzzed
// upstream (OSS-Fuzz), which stb_image 2.27, used before, was not enough to be (a JPEG
// with more than 256 Huffman codes wrote past its table; found by tests/fuzz/image_fuzz).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace qopt {

struct DecodedImage {
  int height = 0;
  int width = 0;
  int channels = 0;             // 1 (grey) or 3 (RGB)
  std::vector<uint8_t> pixels;  // height x width x channels, row-major
};

/// Largest image accepted, in pixels: headers are untrusted, and a few bytes can claim
/// 65535 x 65535. 8192 x 8192 is far above any calibration image.
inline constexpr int64_t kMaxImagePixels = int64_t{8192} * 8192;

/// Decodes PNG or JPEG `bytes` (told apart by their signature) into `channels` (1 or 3)
/// channels. InvalidArgument for other formats, corrupt or truncated data, and images
/// larger than kMaxImagePixels.
[[nodiscard]] absl::StatusOr<DecodedImage> DecodeImage(const std::vector<char>& bytes, int channels);

}  // namespace qopt
