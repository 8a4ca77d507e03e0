#include "store/blob_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "durable_file.h"
#include "status.h"

namespace qopt::server {

namespace fs = std::filesystem;

absl::StatusOr<std::unique_ptr<BlobStore>> BlobStore::Open(const std::string& root) {
  std::error_code ec;
  fs::create_directories(fs::path(root) / "blobs", ec);
  fs::create_directories(fs::path(root) / "uploads", ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot create blob store in ", root, ": ", ec.message()));
  return std::unique_ptr<BlobStore>(new BlobStore(root));
}

std::string BlobStore::Path(const std::string& sha256) const {
  return (fs::path(root_) / "blobs" / sha256.substr(0, 2) / sha256).string();
}

bool BlobStore::Exists(const std::string& sha256) const {
  std::error_code ec;
  return IsSha256Hex(sha256) && fs::is_regular_file(Path(sha256), ec);
}

int64_t BlobStore::Size(const std::string& sha256) const {
  std::error_code ec;
  const auto n = fs::file_size(Path(sha256), ec);
  return ec ? -1 : static_cast<int64_t>(n);
}

std::string BlobStore::PartPath(const std::string& sha256, const std::string& owner) const {
  return (fs::path(root_) / "uploads" / absl::StrCat(sha256, ".", owner, ".part")).string();
}

int64_t BlobStore::PartialSize(const std::string& sha256, const std::string& owner) const {
  std::error_code ec;
  const auto n = fs::file_size(PartPath(sha256, owner), ec);
  return ec ? 0 : static_cast<int64_t>(n);
}

int64_t BlobStore::PartialBytes(const std::string& owner) const {
  const std::string suffix = absl::StrCat(".", owner, ".part");
  int64_t total = 0;
  std::error_code ec;
  for (fs::directory_iterator it(fs::path(root_) / "uploads", ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!absl::EndsWith(name, suffix)) continue;
    std::error_code size_ec;
    const auto n = it->file_size(size_ec);
    if (!size_ec) total += static_cast<int64_t>(n);
  }
  return total;
}

BlobStore::Removed BlobStore::RemoveExpiredParts(int64_t max_age_ms) {
  Removed removed;
  const auto cutoff = fs::file_time_type::clock::now() - std::chrono::milliseconds(max_age_ms);
  std::error_code ec;
  for (fs::directory_iterator it(fs::path(root_) / "uploads", ec), end; !ec && it != end; it.increment(ec)) {
    if (!absl::EndsWith(it->path().filename().string(), ".part")) continue;
    std::error_code file_ec;
    if (it->last_write_time(file_ec) > cutoff || file_ec) continue;
    const auto n = it->file_size(file_ec);
    if (fs::remove(it->path(), file_ec)) {
      ++removed.files;
      removed.bytes += file_ec ? 0 : static_cast<int64_t>(n);
    }
  }
  return removed;
}

std::vector<std::string> BlobStore::ListBlobs() const {
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(fs::path(root_) / "blobs", ec), end; !ec && it != end;
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (IsSha256Hex(name)) out.push_back(name);
  }
  return out;
}

absl::Status BlobStore::Remove(const std::string& sha256) {
  if (!IsSha256Hex(sha256)) return absl::InvalidArgumentError("not a sha256");
  std::error_code ec;
  fs::remove(Path(sha256), ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot delete blob ", sha256, ": ", ec.message()));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<BlobUpload>> BlobStore::Begin(const std::string& sha256,
                                                             int64_t size, int64_t offset,
                                                             const std::string& owner) {
  if (!IsSha256Hex(sha256)) {
    return absl::InvalidArgumentError(absl::StrCat("'", sha256, "' is not a sha256 (64 lowercase hex digits)"));
  }
  if (owner.empty() || owner.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("bad upload owner key '", owner, "'"));
  }
  if (size < 0 || offset < 0 || offset > size) {
    return absl::InvalidArgumentError(absl::StrCat("bad upload range: offset ", offset, " of ", size, " bytes"));
  }
  const int64_t on_disk = PartialSize(sha256, owner);
  if (offset != 0 && offset != on_disk) {
    return absl::FailedPreconditionError(absl::StrCat(
        "upload of ", sha256, " can resume at offset ", on_disk, ", not ", offset));
  }
  std::unique_ptr<BlobUpload> up(new BlobUpload());
  up->sha256_ = sha256;
  up->size_ = size;
  up->part_path_ = PartPath(sha256, owner);
  up->final_path_ = Path(sha256);
  const int fd = open(up->part_path_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | (offset == 0 ? O_TRUNC : O_APPEND), 0644);
  // Errors reach callers: they name the blob, never the server's files.
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot open the partial file of blob ", sha256));
  // A resumed upload is fresh again: garbage collection expires parts by their mtime.
  futimens(fd, nullptr);
  up->file_ = std::make_unique<ReceivedFile>(fd, offset);
  if (offset > 0) {
    // Resuming: the hash must cover the bytes already on disk.
    std::ifstream in(up->part_path_, std::ios::binary);
    while (in) {
      std::string chunk(1 << 20, '\0');
      in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
      chunk.resize(static_cast<size_t>(in.gcount()));
      if (!chunk.empty()) up->file_->Rehash(std::move(chunk));
    }
  }
  return up;
}

BlobUpload::~BlobUpload() = default;

absl::Status BlobUpload::Write(std::string bytes) {
  if (offset() + static_cast<int64_t>(bytes.size()) > size_) {
    return absl::InvalidArgumentError(absl::StrCat("upload exceeds its declared size of ", size_, " bytes"));
  }
  if (!file_->Append(std::move(bytes)).ok()) {
    return absl::InternalError(absl::StrCat("cannot write blob ", sha256_, " to disk"));
  }
  return absl::OkStatus();
}

absl::Status BlobUpload::Seal() {
  if (offset() != size_) {
    return absl::InvalidArgumentError(absl::StrCat("upload ended at ", offset(), " of ", size_, " bytes"));
  }
  if (!file_->Sync().ok()) return absl::InternalError(absl::StrCat("cannot make blob ", sha256_, " durable (fsync)"));
  const std::string actual = file_->HexDigest();
  if (actual != sha256_) {
    Discard();
    return absl::InvalidArgumentError(absl::StrCat("sha256 mismatch: declared ", sha256_, ", received ", actual));
  }
  sealed_ = true;
  return absl::OkStatus();
}

void BlobUpload::Discard() {
  std::error_code ec;
  fs::remove(part_path_, ec);
  sealed_ = false;
}

absl::Status BlobUpload::Publish() {
  if (!sealed_) return absl::FailedPreconditionError("upload not sealed");
  std::error_code ec;
  fs::create_directories(fs::path(final_path_).parent_path(), ec);
  fs::rename(part_path_, final_path_, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot publish blob ", sha256_, ": ", ec.message()));
  sealed_ = false;
  SyncFolderOf(final_path_);  // the rename is durable once the directory entry is
  return absl::OkStatus();
}

absl::Status BlobUpload::Commit() {
  RETURN_IF_ERROR(Seal());
  return Publish();
}

}  // namespace qopt::server
