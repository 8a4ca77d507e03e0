// SHA-256 with OpenSSL's EVP interface: blobs and artifacts are named by their hash.
// Shared by the server (upload verification), the worker and the CLI.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace qopt {

/// An incremental hash, for data that arrives in chunks.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(absl::string_view bytes);
  /// Lowercase hex of the digest; call once.
  std::string HexDigest();

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

struct FileDigest {
  std::string sha256;  // lowercase hex
  int64_t size = 0;    // bytes
};

/// Hashes a whole file. InvalidArgument when it cannot be read.
[[nodiscard]] absl::StatusOr<FileDigest> Sha256File(const std::string& path);

/// True for 64 lowercase hex digits, the service's blob names.
bool IsSha256Hex(absl::string_view text);

}  // namespace qopt
