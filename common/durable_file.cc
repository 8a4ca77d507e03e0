#include "durable_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace qopt {

namespace {
constexpr int64_t kSyncStep = 32 << 20;
}  // namespace

ReceivedFile::ReceivedFile(int fd, int64_t offset) : fd_(fd), written_(offset), synced_(offset) {}

ReceivedFile::~ReceivedFile() {
  StopSyncing();
  if (fd_ >= 0) close(fd_);
}

absl::Status ReceivedFile::Append(std::string bytes) {
  for (size_t done = 0; done < bytes.size();) {
    const ssize_t n = write(fd_, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::ResourceExhaustedError(std::strerror(errno));
    done += static_cast<size_t>(n);
  }
  const int64_t size = static_cast<int64_t>(bytes.size());
  hash_.Update(std::move(bytes));
  std::lock_guard<std::mutex> lock(mu_);
  written_ += size;
  if (written_ - synced_ >= kSyncStep) {
    if (!syncer_.joinable()) syncer_ = std::thread([this] { SyncBehind(); });
    changed_.notify_one();
  }
  return absl::OkStatus();
}

void ReceivedFile::SyncBehind() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    changed_.wait(lock, [&] { return stop_ || written_ - synced_ >= kSyncStep; });
    if (stop_) return;
    const int64_t upto = written_;
    lock.unlock();
    const int failed = fdatasync(fd_) == 0 ? 0 : errno;
    lock.lock();
    synced_ = upto;
    if (failed != 0 && sync_errno_ == 0) sync_errno_ = failed;
  }
}

void ReceivedFile::StopSyncing() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  changed_.notify_all();
  if (syncer_.joinable()) syncer_.join();
}

absl::Status ReceivedFile::Sync() {
  StopSyncing();
  int failed = fsync(fd_) == 0 ? 0 : errno;
  if (failed == 0) failed = sync_errno_;
  close(fd_);
  fd_ = -1;
  if (failed != 0) return absl::ResourceExhaustedError(std::strerror(failed));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<DurableFileWriter>> DurableFileWriter::Create(const std::string& path) {
  const std::string partial = path + ".partial";
  const int fd = open(partial.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InvalidArgumentError(absl::StrCat("cannot write ", partial, ": ", std::strerror(errno)));
  return std::unique_ptr<DurableFileWriter>(new DurableFileWriter(path, fd));
}

DurableFileWriter::DurableFileWriter(std::string path, int fd)
    : path_(std::move(path)), partial_(path_ + ".partial"), file_(fd, 0) {}

DurableFileWriter::~DurableFileWriter() {
  if (!committed_) {
    std::error_code ec;
    std::filesystem::remove(partial_, ec);
  }
}

absl::Status DurableFileWriter::Append(std::string bytes) {
  absl::Status s = file_.Append(std::move(bytes));
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

FileDigest DurableFileWriter::Digest() { return FileDigest{file_.HexDigest(), file_.size()}; }

absl::Status DurableFileWriter::Commit() {
  if (absl::Status s = file_.Sync(); !s.ok()) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot write ", partial_, " to disk: ", s.message()));
  }
  std::error_code ec;
  std::filesystem::rename(partial_, path_, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("cannot rename ", partial_, " to ", path_, ": ", ec.message()));
  committed_ = true;
  SyncFolderOf(path_);
  return absl::OkStatus();
}

}  // namespace qopt
