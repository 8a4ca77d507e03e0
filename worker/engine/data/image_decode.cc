#include "data/image_decode.h"

#include <png.h>
#include <turbojpeg.h>

#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"

namespace qopt {
namespace internal_image {

absl::Status CheckSize(int64_t width, int64_t height) {
  if (width <= 0 || height <= 0 || width * height > kMaxImagePixels) {
    return absl::InvalidArgumentError(absl::StrCat("image of ", width, "x", height, " pixels is outside 1..",
                                                   kMaxImagePixels, " pixels"));
  }
  return absl::OkStatus();
}

absl::StatusOr<DecodedImage> DecodePng(const std::vector<char>& bytes, int channels) {
  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, bytes.data(), bytes.size())) {
    return absl::InvalidArgumentError(absl::StrCat("corrupt PNG: ", image.message));
  }
  if (absl::Status s = CheckSize(image.width, image.height); !s.ok()) {
    png_image_free(&image);
    return s;
  }
  image.format = channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  DecodedImage out{static_cast<int>(image.height), static_cast<int>(image.width), channels, {}};
  out.pixels.resize(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, /*background=*/nullptr, out.pixels.data(), /*row_stride=*/0,
                             /*colormap=*/nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat("corrupt PNG: ", image.message));
  }
  return out;
}

absl::StatusOr<DecodedImage> DecodeJpeg(const std::vector<char>& bytes, int channels) {
  std::unique_ptr<void, int (*)(tjhandle)> handle(tjInitDecompress(), tjDestroy);
  if (!handle) return absl::InternalError("cannot start the JPEG decoder");
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  int width = 0, height = 0, subsampling = 0, colorspace = 0;
  if (tjDecompressHeader3(handle.get(), data, bytes.size(), &width, &height, &subsampling, &colorspace) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("corrupt JPEG: ", tjGetErrorStr2(handle.get())));
  }
  if (absl::Status s = CheckSize(width, height); !s.ok()) return s;
  DecodedImage out{height, width, channels, {}};
  out.pixels.resize(static_cast<size_t>(width) * height * channels);
  if (tjDecompress2(handle.get(), data, bytes.size(), out.pixels.data(), width, /*pitch=*/0, height,
                    channels == 1 ? TJPF_GRAY : TJPF_RGB, TJFLAG_STOPONWARNING) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("corrupt JPEG: ", tjGetErrorStr2(handle.get())));
  }
  return out;
}

}  // namespace internal_image

absl::StatusOr<DecodedImage> DecodeImage(const std::vector<char>& bytes, int channels) {
  using namespace internal_image;
  if (channels != 1 && channels != 3) {
    return absl::InvalidArgumentError(absl::StrCat("images decode to 1 or 3 channels, not ", channels));
  }
  if (bytes.size() >= 8 && png_sig_cmp(reinterpret_cast<png_const_bytep>(bytes.data()), 0, 8) == 0) {
    return DecodePng(bytes, channels);
  }
  if (bytes.size() >= 3 && static_cast<unsigned char>(bytes[0]) == 0xFF &&
      static_cast<unsigned char>(bytes[1]) == 0xD8 && static_cast<unsigned char>(bytes[2]) == 0xFF) {
    return DecodeJpeg(bytes, channels);
  }
  return absl::InvalidArgumentError("not a PNG or JPEG image");
}

}  // namespace qopt
