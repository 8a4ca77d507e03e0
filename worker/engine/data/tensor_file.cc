#include "data/tensor_file.h"

#include <filesystem>
#include <fstream>
#include <regex>

#include <ATen/ATen.h>
#include <torch/csrc/jit/serialization/pickle.h>

#include "absl/strings/str_cat.h"
#include "status.h"
#include "absl/strings/str_join.h"

namespace qopt {
namespace internal_data {

absl::StatusOr<std::vector<char>> ReadAll(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("data file not found: ", path));
  }
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.eof() && in.fail()) return absl::InvalidArgumentError("cannot read " + path);
  return bytes;
}

bool IsNpy(const std::vector<char>& b) {
  return b.size() >= 6 && static_cast<unsigned char>(b[0]) == 0x93 &&
         std::string(b.begin() + 1, b.begin() + 6) == "NUMPY";
}

}  // namespace internal_data

absl::StatusOr<at::Tensor> LoadNpy(const std::string& path) {
  using namespace internal_data;
  auto bytes_or = ReadAll(path);
  if (!bytes_or.ok()) return bytes_or.status();
  const std::vector<char>& b = *bytes_or;
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
    shape.push_back(std::stoll(it->str()));
  }
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  const size_t data_start = header_start + header_len;
  const size_t need = static_cast<size_t>(count) * at::elementSize(dtype);
  if (b.size() - data_start < need) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": truncated .npy: expected ", need,
                                                   " data bytes for shape (",
                                                   absl::StrJoin(shape, ", "), "), found ",
                                                   b.size() - data_start));
  }
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dtype));
  std::memcpy(t.data_ptr(), b.data() + data_start, need);
  return t.to(at::kFloat);
}

absl::StatusOr<at::Tensor> LoadTorchSaved(const std::string& path) {
  using namespace internal_data;
  auto bytes_or = ReadAll(path);
  if (!bytes_or.ok()) return bytes_or.status();
  c10::IValue v;
  try {
    v = torch::jit::pickle_load(*bytes_or);
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": not a tensor saved with torch.save: ", FirstLine(msg)));
  }
  if (v.isTensor()) return v.toTensor().to(at::kFloat);
  std::vector<at::Tensor> parts;
  if (v.isTensorList()) {
    for (const at::Tensor& t : v.toTensorVector()) parts.push_back(t);
  } else if (v.isList() || v.isTuple()) {
    const auto elems = v.isList() ? v.toListRef().vec() : v.toTupleRef().elements().vec();
    for (const auto& e : elems) {
      if (!e.isTensor()) break;
      parts.push_back(e.toTensor());
    }
  }
  if (parts.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": expected a tensor or a list of tensors, found ", v.tagKind()));
  }
  try {
    return at::stack(parts).to(at::kFloat);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": tensors in the list differ in shape"));
  }
}

absl::StatusOr<at::Tensor> LoadTensorFile(const std::string& path) {
  using namespace internal_data;
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("data file not found: ", path));
  char head[6] = {0};
  in.read(head, 6);
  if (in.gcount() == 6 && static_cast<unsigned char>(head[0]) == 0x93 &&
      std::string(head + 1, 5) == "NUMPY") {
    return LoadNpy(path);
  }
  if (in.gcount() >= 2 && head[0] == 'P' && head[1] == 'K') return LoadTorchSaved(path);
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": unknown data format (expected .npy or a torch.save file)"));
}

std::vector<at::Tensor> MakeBatches(const at::Tensor& data, int64_t batch_size,
                                    int64_t max_samples) {
  std::vector<at::Tensor> out;
  int64_t n = data.size(0);
  if (max_samples > 0) n = std::min(n, max_samples);
  for (int64_t start = 0; start < n; start += batch_size) {
    out.push_back(data.slice(0, start, std::min(n, start + batch_size)));
  }
  return out;
}

}  // namespace qopt
