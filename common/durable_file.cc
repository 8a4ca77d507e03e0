#include "durable_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace qopt {

absl::StatusOr<std::unique_ptr<DurableFileWriter>> DurableFileWriter::Create(const std::string& path) {
  const std::string partial = path + ".partial";
  const int fd = open(partial.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InvalidArgumentError(absl::StrCat("cannot write ", partial, ": ", std::strerror(errno)));
  return std::unique_ptr<DurableFileWriter>(new DurableFileWriter(path, fd));
}

DurableFileWriter::DurableFileWriter(std::string path, int fd)
    : path_(std::move(path)), partial_(path_ + ".partial"), fd_(fd) {}

DurableFileWriter::~DurableFileWriter() {
  if (fd_ >= 0) close(fd_);
  if (!committed_) {
    std::error_code ec;
    std::filesystem::remove(partial_, ec);
  }
}

absl::Status HashAndWrite(int fd, absl::string_view bytes, Sha256& hash, int64_t& written, int64_t& flushed) {
  constexpr size_t kSlice = 64 << 10;
  for (size_t at = 0; at < bytes.size(); at += kSlice) {
    const absl::string_view slice = bytes.substr(at, kSlice);
    hash.Update(slice);
    for (size_t done = 0; done < slice.size();) {
      const ssize_t n = write(fd, slice.data() + done, slice.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return absl::ResourceExhaustedError(std::strerror(errno));
      done += static_cast<size_t>(n);
    }
  }
  written += static_cast<int64_t>(bytes.size());
  constexpr int64_t kWriteBehind = 8 << 20;
  if (written - flushed >= kWriteBehind) {
    sync_file_range(fd, flushed, written - flushed, SYNC_FILE_RANGE_WRITE);
    flushed = written;
  }
  return absl::OkStatus();
}

absl::Status DurableFileWriter::Append(absl::string_view bytes) {
  absl::Status s = HashAndWrite(fd_, bytes, hash_, written_, flushed_);
  if (!s.ok()) return absl::ResourceExhaustedError(absl::StrCat("cannot write ", partial_, ": ", s.message()));
  return absl::OkStatus();
}

void SyncFolderOf(const std::string& path) {
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
}

FileDigest DurableFileWriter::Digest() { return FileDigest{hash_.HexDigest(), written_}; }

absl::Status DurableFileWriter::Commit() {
  if (fsync(fd_) != 0) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot write ", partial_, " to disk: ", std::strerror(errno)));
  }
  close(fd_);
  fd_ = -1;
  std::error_code ec;
  std::filesystem::rename(partial_, path_, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("cannot rename ", partial_, " to ", path_, ": ", ec.message()));
  committed_ = true;
  SyncFolderOf(path_);
  return absl::OkStatus();
}

}  // namespace qopt
