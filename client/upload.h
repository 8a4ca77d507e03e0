// Resumable upload of a local file to the BlobService.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "connection.h"
#include "sha256.h"

namespace qopt::cli {

/// Bytes per Upload chunk; the service accepts at most 1 MiB.
inline constexpr size_t kUploadChunkBytes = 1 << 20;

/// Hashes `path`, asks the service how much of that blob it already holds, and streams
/// only the rest. A blob the service already has costs one small RPC. An interrupted
/// stream (UNAVAILABLE) is resumed from the service's committed offset a few times before
/// giving up. Returns the blob's sha256 and size.
[[nodiscard]] absl::StatusOr<FileDigest> UploadFile(Connection& connection,
                                                    const std::string& path);

}  // namespace qopt::cli
