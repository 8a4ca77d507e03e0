#include "data/tensor_file.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <regex>

#include <ATen/ATen.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "status.h"

namespace qopt {

std::optional<size_t> DenseBytes(const std::vector<int64_t>& shape, size_t element_size) {
  // A zero dimension makes the size 0 but not the strides, which multiply the other
  // dimensions: (0, 2^32-1, 2^32-1, 2^32-1) has a stride that overflows int64_t.
  size_t bytes = element_size, span = element_size;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(bytes, static_cast<size_t>(d), &bytes) ||
        __builtin_mul_overflow(span, static_cast<size_t>(std::max<int64_t>(d, 1)), &span)) {
      return std::nullopt;
    }
  }
  // at::empty counts in int64_t.
  if (span > static_cast<size_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
  return bytes;
}
namespace internal_data {

}  // namespace internal_data

absl::StatusOr<std::vector<char>> ReadFileBytes(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("data file not found: ", path));
  }
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.eof() && in.fail()) return absl::InvalidArgumentError("cannot read " + path);
  return bytes;
}

namespace internal_data {

bool IsNpy(const std::vector<char>& b) {
  return b.size() >= 6 && static_cast<unsigned char>(b[0]) == 0x93 &&
         std::string(b.begin() + 1, b.begin() + 6) == "NUMPY";
}

}  // namespace internal_data

absl::StatusOr<at::Tensor> LoadNpy(const std::string& path) {
  auto bytes = ReadFileBytes(path);
  if (!bytes.ok()) return bytes.status();
  auto t = ParseNpy(*bytes, path);
  if (!t.ok()) return t.status();
  return t->to(at::kFloat);
}

absl::StatusOr<at::Tensor> ParseNpy(const std::vector<char>& b, const std::string& path) {
  using namespace internal_data;
  if (!IsNpy(b) || b.size() < 10) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a .npy file"));
  }
  const int major = static_cast<unsigned char>(b[6]);
  size_t header_len = 0, header_start = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(b[8]) | (static_cast<unsigned char>(b[9]) << 8);
    header_start = 10;
  } else if (b.size() >= 12) {
    header_len = 0;
    for (int i = 0; i < 4; ++i) header_len |= static_cast<size_t>(static_cast<unsigned char>(b[8 + i])) << (8 * i);
    header_start = 12;
  }
  if (header_start == 0 || header_start + header_len > b.size()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": truncated .npy header"));
  }
  const std::string header(b.begin() + header_start, b.begin() + header_start + header_len);
  std::smatch m;
  if (!std::regex_search(header, m, std::regex("'descr':\\s*'([<>|=]?)(\\w+)'"))) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": .npy header has no dtype"));
  }
  const std::string endian = m[1], type = m[2];
  if (endian == ">") return absl::InvalidArgumentError(path + ": big-endian .npy is not supported");
  at::ScalarType dtype;
  if (type == "f4") dtype = at::kFloat;
  else if (type == "f8") dtype = at::kDouble;
  else if (type == "u1") dtype = at::kByte;
  else if (type == "i8") dtype = at::kLong;
  else if (type == "i4") dtype = at::kInt;
  else return absl::InvalidArgumentError(absl::StrCat(path, ": .npy dtype '", type,
                                                      "' is not supported (use float32)"));
  if (std::regex_search(header, std::regex("'fortran_order':\\s*True"))) {
    return absl::InvalidArgumentError(path + ": Fortran-ordered .npy is not supported");
  }
  if (!std::regex_search(header, m, std::regex("'shape':\\s*\\(([^)]*)\\)"))) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": .npy header has no shape"));
  }
  std::vector<int64_t> shape;
  const std::string dims = m[1];
  const std::regex number("\\d+");
  for (std::sregex_iterator it(dims.begin(), dims.end(), number), end; it != end; ++it) {
    int64_t d = 0;
    if (!absl::SimpleAtoi(it->str(), &d)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": .npy shape dimension ", it->str(), " is too large"));
    }
    shape.push_back(d);
  }
  const size_t data_start = header_start + header_len;
  const std::optional<size_t> bytes = DenseBytes(shape, at::elementSize(dtype));
  if (!bytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": .npy shape (", absl::StrJoin(shape, ", "),
                                                   ") is not a tensor this file can hold"));
  }
  const size_t need = *bytes;
  if (b.size() - data_start < need) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": truncated .npy: expected ", need,
                                                   " data bytes for shape (",
                                                   absl::StrJoin(shape, ", "), "), found ",
                                                   b.size() - data_start));
  }
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dtype));
  // An empty tensor has no storage (data_ptr() is null), and memcpy's pointers must not be.
  if (need > 0) std::memcpy(t.data_ptr(), b.data() + data_start, need);
  return t;
}

}  // namespace qopt
