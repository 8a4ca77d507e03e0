// IDX files: a big-endian header (0, 0, type, ndim, then ndim sizes) and raw data.
#include <zlib.h>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "data/dataset.h"
#include "data/tensor_file.h"

namespace qopt {

absl::StatusOr<at::Tensor> ReadIdx(const std::string& path) {
  // gzread reads plain files unchanged, so one reader serves .gz and raw IDX.
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) return absl::InvalidArgumentError(absl::StrCat("data file not found: ", path));
  std::vector<unsigned char> bytes;
  unsigned char buf[1 << 16];
  int n = 0;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) bytes.insert(bytes.end(), buf, buf + n);
  int err = 0;
  const char* msg = gzerror(f, &err);
  const bool failed = n < 0 || (err != Z_OK && err != Z_BUF_ERROR);
  const std::string gz_message = msg ? msg : "";
  gzclose(f);
  if (failed) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": corrupt gzip data: ", gz_message));
  }
  if (bytes.size() < 4 || bytes[0] != 0 || bytes[1] != 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not an IDX file"));
  }
  at::ScalarType dtype;
  switch (bytes[2]) {
    case 0x08: dtype = at::kByte; break;
    case 0x09: dtype = at::kChar; break;
    case 0x0B: dtype = at::kShort; break;
    case 0x0C: dtype = at::kInt; break;
    case 0x0D: dtype = at::kFloat; break;
    case 0x0E: dtype = at::kDouble; break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": unknown IDX element type 0x", absl::Hex(bytes[2])));
  }
  const int ndim = bytes[3];
  const size_t header = 4 + 4 * static_cast<size_t>(ndim);
  if (ndim == 0 || bytes.size() < header) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": truncated IDX header"));
  }
  std::vector<int64_t> shape;
  for (int i = 0; i < ndim; ++i) {
    const unsigned char* p = bytes.data() + 4 + 4 * i;
    shape.push_back((int64_t{p[0]} << 24) | (int64_t{p[1]} << 16) | (int64_t{p[2]} << 8) | p[3]);
  }
  const size_t element = at::elementSize(dtype);
  const std::optional<size_t> total = DenseBytes(shape, element);
  if (!total) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": IDX shape (", absl::StrJoin(shape, ", "),
                                                   ") is not a tensor this file can hold"));
  }
  const size_t need = *total;
  if (bytes.size() - header < need) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": truncated IDX data: shape (", absl::StrJoin(shape, ", "), ") needs ", need,
        " bytes, found ", bytes.size() - header));
  }
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dtype));
  auto* out = static_cast<unsigned char*>(t.data_ptr());
  const unsigned char* src = bytes.data() + header;
  // IDX stores multi-byte elements big-endian.
  for (size_t i = 0; i < need / element; ++i) {
    for (size_t b = 0; b < element; ++b) out[i * element + b] = src[i * element + element - 1 - b];
  }
  return t;
}

}  // namespace qopt
