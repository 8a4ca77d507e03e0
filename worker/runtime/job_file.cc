#include "runtime/job_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace qopt::worker {

absl::StatusOr<std::unique_ptr<JobFile>> JobFile::Open(const std::string& path, absl::string_view what) {
  // O_NONBLOCK: a FIFO in the job's folder must not hang the worker before fstat refuses it.
  const int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0 && errno == ELOOP) {
    return absl::FailedPreconditionError(absl::StrCat(what, " is a link, not a plain file of the job's own"));
  }
  if (fd < 0) return absl::NotFoundError(absl::StrCat("cannot open the ", what, ": ", std::strerror(errno)));
  std::unique_ptr<JobFile> file(new JobFile(fd, std::string(what)));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) {
    return absl::FailedPreconditionError(absl::StrCat(what, " is not a plain file of the job's own"));
  }
  return file;
}

JobFile::~JobFile() { close(fd_); }

int64_t JobFile::ReadAt(int64_t offset) {
  for (;;) {
    const ssize_t n = pread(fd_, buf_.data(), buf_.size(), offset);
    if (n >= 0 || errno != EINTR) return n;
  }
}

absl::StatusOr<FileDigest> JobFile::Digest(const std::atomic<bool>* stop) {
  Sha256 hash;
  int64_t size = 0;
  for (int64_t n; (stop == nullptr || !*stop) && (n = ReadAt(size)) != 0; size += n) {
    if (n < 0) return absl::InternalError(absl::StrCat("cannot read the ", what_, ": ", std::strerror(errno)));
    hash.Update(absl::string_view(buf_.data(), static_cast<size_t>(n)));
  }
  if (stop != nullptr && *stop) return absl::CancelledError("the job ended");
  return FileDigest{hash.HexDigest(), size};
}

void JobFile::SendChunks(int64_t size, const std::function<bool(absl::string_view)>& send) {
  for (int64_t offset = 0; offset < size;) {
    const int64_t n = ReadAt(offset);
    if (n <= 0) return;
    if (!send(absl::string_view(buf_.data(), static_cast<size_t>(std::min(n, size - offset))))) return;
    offset += n;
  }
}

}  // namespace qopt::worker
