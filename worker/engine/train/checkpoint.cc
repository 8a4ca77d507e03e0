#include "train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "data/tensor_file.h"
#include "status.h"

namespace qopt {
namespace {

constexpr char kMagic[8] = {'Q', 'O', 'P', 'T', 'C', 'K', 'P', 'T'};

const char* DtypeName(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kLong: return "int64";
    default: return nullptr;
  }
}

std::optional<at::ScalarType> DtypeFromName(const std::string& name) {
  if (name == "float32") return at::kFloat;
  if (name == "float64") return at::kDouble;
  if (name == "int64") return at::kLong;
  return std::nullopt;
}

absl::Status SyncAndClose(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot reopen ", path));
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  return synced ? absl::OkStatus() : absl::InternalError(absl::StrCat("cannot sync ", path));
}

}  // namespace

absl::Status WriteCheckpoint(const std::string& path, const Checkpoint& checkpoint) {
  nlohmann::json header;
  header["meta"] = checkpoint.meta;
  header["tensors"] = nlohmann::json::array();
  std::vector<at::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : checkpoint.tensors) {
    at::Tensor t = tensor.detach().cpu().contiguous();
    const char* dtype = DtypeName(t.scalar_type());
    if (dtype == nullptr) return absl::InternalError(absl::StrCat("checkpoint tensor ", name, " has an unsupported type"));
    const uint64_t bytes = t.numel() * t.element_size();
    header["tensors"].push_back({{"name", name}, {"dtype", dtype}, {"shape", t.sizes().vec()},
                                 {"offset", offset}, {"bytes", bytes}});
    offset += bytes;
    data.push_back(std::move(t));
  }
  const std::string head = header.dump();
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    const uint64_t length = head.size();
    out.write(kMagic, sizeof(kMagic));
    out.write(reinterpret_cast<const char*>(&length), sizeof(length));
    out.write(head.data(), static_cast<std::streamsize>(head.size()));
    for (const at::Tensor& t : data) {
      out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size()));
    }
    out.close();
    if (!out) return absl::InternalError(absl::StrCat("cannot write checkpoint ", tmp));
  }
  RETURN_IF_ERROR(SyncAndClose(tmp));
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot move checkpoint into place: ", ec.message()));
  return absl::OkStatus();
}

absl::StatusOr<Checkpoint> ReadCheckpoint(const std::string& path, int64_t max_bytes) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return absl::NotFoundError(absl::StrCat("no checkpoint at ", path));
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("checkpoint: cannot stat ", path));
  if (static_cast<int64_t>(size) > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint is ", size, " bytes, more than the limit of ", max_bytes));
  }
  ASSIGN_OR_RETURN(const std::vector<char> bytes, ReadFileBytes(path));
  auto bad = [](const std::string& why) { return absl::InvalidArgumentError("checkpoint is corrupt: " + why); };
  if (bytes.size() < sizeof(kMagic) + 8 || std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return bad("not a qopt checkpoint");
  }
  uint64_t length = 0;
  std::memcpy(&length, bytes.data() + sizeof(kMagic), sizeof(length));
  const uint64_t body = sizeof(kMagic) + sizeof(length);
  if (length > bytes.size() - body) return bad("header runs past the end of the file");
  const nlohmann::json header = nlohmann::json::parse(bytes.begin() + body, bytes.begin() + body + length,
                                                      nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object() || !header.contains("tensors") || !header["tensors"].is_array()) {
    return bad("header is not the expected JSON");
  }
  const uint64_t data_start = body + length;
  const uint64_t data_size = bytes.size() - data_start;
  Checkpoint out;
  if (header.contains("meta")) out.meta = header["meta"];
  try {
    for (const auto& entry : header["tensors"]) {
      const std::string name = entry.at("name").get<std::string>();
      const auto dtype = DtypeFromName(entry.at("dtype").get<std::string>());
      if (!dtype) return bad(absl::StrCat("tensor ", name, " has an unknown dtype"));
      const std::vector<int64_t> shape = entry.at("shape").get<std::vector<int64_t>>();
      const uint64_t offset = entry.at("offset").get<uint64_t>();
      const uint64_t stored = entry.at("bytes").get<uint64_t>();
      const std::optional<size_t> dense = DenseBytes(shape, c10::elementSize(*dtype));
      if (!dense || *dense != stored) return bad(absl::StrCat("tensor ", name, " has a shape that does not match its size"));
      if (offset > data_size || stored > data_size - offset) return bad(absl::StrCat("tensor ", name, " runs past the end"));
      at::Tensor t = at::empty(shape, at::TensorOptions().dtype(*dtype));
      std::memcpy(t.data_ptr(), bytes.data() + data_start + offset, stored);
      if (!out.tensors.emplace(name, std::move(t)).second) return bad(absl::StrCat("tensor ", name, " appears twice"));
    }
  } catch (const std::exception& e) {
    return bad(absl::StrCat("header: ", e.what()));
  }
  return out;
}

absl::StatusOr<nlohmann::json> ReadCheckpointMeta(const std::string& path, int64_t max_header_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("no checkpoint at ", path));
  auto bad = [](const std::string& why) { return absl::InvalidArgumentError("checkpoint is corrupt: " + why); };
  char magic[sizeof(kMagic)];
  uint64_t length = 0;
  if (!in.read(magic, sizeof(magic)) || std::memcmp(magic, kMagic, sizeof(kMagic)) != 0) return bad("not a qopt checkpoint");
  if (!in.read(reinterpret_cast<char*>(&length), sizeof(length))) return bad("no header");
  if (length > static_cast<uint64_t>(max_header_bytes)) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint header is ", length, " bytes, more than the limit of ", max_header_bytes));
  }
  std::string header_text(length, '\0');
  if (!in.read(header_text.data(), static_cast<std::streamsize>(length))) return bad("header runs past the end of the file");
  const nlohmann::json header = nlohmann::json::parse(header_text, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) return bad("header is not the expected JSON");
  return header.contains("meta") ? header["meta"] : nlohmann::json::object();
}

}  // namespace qopt
