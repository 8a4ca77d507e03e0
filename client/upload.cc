#include "upload.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "chunk_messages.h"
#include "errors.h"
#include "status.h"

namespace qopt::cli {
namespace {

constexpr int kMaxAttempts = 4;

// Where to start: the committed offset of an earlier, interrupted upload, or -1 when the
// blob is already complete.
absl::StatusOr<int64_t> ResumeOffset(Connection& connection, const FileDigest& digest) {
  v1::GetUploadStatusRequest request;
  request.set_sha256(digest.sha256);
  v1::GetUploadStatusResponse response;
  auto context = connection.UnaryContext();
  RETURN_IF_ERROR(FromGrpc(connection.blobs().GetUploadStatus(context.get(), request, &response)));
  if (response.complete()) return -1;
  // A partial upload longer than the file cannot be ours to resume; start over.
  const int64_t offset = response.committed_offset();
  return offset >= 0 && offset <= digest.size ? offset : 0;
}

absl::Status SendFrom(Connection& connection, const std::string& path, const FileDigest& digest,
                      int64_t offset) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || lseek(fd, offset, SEEK_SET) != offset) {
    if (fd >= 0) close(fd);
    return UsageError(absl::StrCat("cannot read ", path));
  }
  struct CloseOnExit {
    int fd;
    ~CloseOnExit() { close(fd); }
  } close_on_exit{fd};

  auto context = connection.StreamContext();
  v1::UploadResponse response;
  // Chunks go from read() straight into the messages gRPC sends (chunk_messages.h).
  auto writer = OpenWireStream(&connection.channel(),
                               absl::StrCat("/", v1::BlobService::service_full_name(), "/Upload"),
                               context.get(), &response);
  v1::UploadRequest request;
  auto* header = request.mutable_header();
  header->set_sha256(digest.sha256);
  header->set_size(digest.size);
  header->set_offset(offset);
  // A failed Write means the stream is dead; Finish() then says why.
  const absl::StatusOr<bool> streaming =
      WriteHeaderAndChunks(*writer, request, fd, path, v1::UploadRequest::kChunkFieldNumber, kUploadChunkBytes);
  if (!streaming.ok()) {
    context->TryCancel();
    static_cast<void>(writer->Finish());  // the read error is the one to report
    return UsageError(streaming.status().message());
  }
  if (*streaming) writer->WritesDone();
  RETURN_IF_ERROR(FromGrpc(writer->Finish()));
  if (response.sha256() != digest.sha256) {
    return absl::DataLossError(absl::StrCat("server stored ", response.sha256(), " for ", path,
                                            ", expected ", digest.sha256));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<FileDigest> UploadFile(Connection& connection, const std::string& path) {
  absl::StatusOr<FileDigest> hashed = Sha256File(path);
  if (!hashed.ok()) return UsageError(hashed.status().message());
  const FileDigest digest = *hashed;
  absl::Status last;
  for (int attempt = 0; attempt < kMaxAttempts; ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(std::chrono::seconds(1 << (attempt - 1)));
    absl::StatusOr<int64_t> offset = ResumeOffset(connection, digest);
    // A server that is down before any byte was sent fails fast; retries are for
    // streams that broke midway.
    if (!offset.ok() && (attempt == 0 || !absl::IsUnavailable(offset.status()))) {
      return offset.status();
    }
    if (offset.ok() && *offset < 0) return digest;
    last = offset.ok() ? SendFrom(connection, path, digest, *offset) : offset.status();
    if (last.ok()) return digest;
    if (!absl::IsUnavailable(last)) return last;
  }
  return last;
}

}  // namespace qopt::cli
