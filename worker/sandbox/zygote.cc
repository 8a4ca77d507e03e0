#include "sandbox/zygote.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "ir/import.h"
#include "qopt/v1/job_process.pb.h"
#include "sandbox/job_process.h"
#include "status.h"

namespace qopt::sandbox {
namespace {

constexpr int kControlFd = 3;
constexpr size_t kMaxMessage = 1 << 16;

absl::Status Errno(const std::string& what) {
  return absl::InternalError(absl::StrCat("zygote: ", what, ": ", std::strerror(errno)));
}

// One message, with up to two descriptors. False when the peer has gone.
bool SendMessage(int socket, const std::string& bytes, const int* fds, int num_fds) {
  iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(2 * sizeof(int))] = {};
  if (num_fds > 0) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(num_fds * sizeof(int));
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(num_fds * sizeof(int));
    std::memcpy(CMSG_DATA(c), fds, num_fds * sizeof(int));
  }
  while (true) {
    if (sendmsg(socket, &msg, MSG_NOSIGNAL) >= 0) return true;
    if (errno != EINTR) return false;
  }
}

void Reply(const v1::ZygoteReply& reply) { SendMessage(kControlFd, reply.SerializeAsString(), nullptr, 0); }

// The job child, right after fork: its descriptors and environment, then the job.
[[noreturn]] void BecomeJobChild(const v1::ZygoteSpawn& spawn, int frame_fd, int err_fd) {
  sigset_t all;
  sigemptyset(&all);
  sigprocmask(SIG_SETMASK, &all, nullptr);
  // The frame pipe takes the place of the zygote's socket; nothing else of the zygote stays.
  if (!SetUpJobChildDescriptors(frame_fd, err_fd)) _exit(127);
  clearenv();
  for (const std::string& e : spawn.env()) putenv(strdup(e.c_str()));
  SandboxOptions limits;
  limits.job_dir = spawn.job_dir();
  limits.memory_mb = spawn.memory_mb();
  limits.cpu_seconds = spawn.cpu_seconds();
  limits.drop_root = !spawn.keep_uid();
  const int code = RunJobChild(limits);
  std::fflush(nullptr);
  _exit(code);
}

// Threads of this process, from /proc/self/status; 0 if it cannot be read.
int ThreadCount() {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return 0;
  char line[256];
  int threads = 0;
  while (std::fgets(line, sizeof(line), f)) {
    if (std::sscanf(line, "Threads: %d", &threads) == 1) break;
  }
  std::fclose(f);
  return threads;
}

}  // namespace

int RunZygote() {
  // Dies with the worker; a worker that is already gone leaves nothing to serve.
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() == 1) return 1;
  // fork copies only the calling thread: a thread started by a library at load time
  // (holding a lock, say) would leave every job child broken.
  if (const int threads = ThreadCount(); threads != 1) {
    std::fprintf(stderr, "zygote: %d threads at start; forking job children would not be safe\n", threads);
    return 1;
  }
  // What every job would pay first, paid once here.
  if (absl::Status s = PrepareSandbox(); !s.ok()) {
    std::fprintf(stderr, "zygote: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  WarmUpImport();
  if (const int threads = ThreadCount(); threads != 1) {
    std::fprintf(stderr, "zygote: the warm-up left %d threads; forking job children would not be safe\n", threads);
    return 1;
  }
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, nullptr);
  const int sigfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sigfd < 0) {
    std::perror("zygote: signalfd");
    return 1;
  }
  std::set<pid_t> children;
  auto reap = [&] {
    int status = 0;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
      children.erase(pid);
      v1::ZygoteReply r;
      r.mutable_exited()->set_pid(pid);
      r.mutable_exited()->set_status(status);
      Reply(r);
    }
  };
  {
    v1::ZygoteReply ready;
    ready.set_ready(true);
    Reply(ready);
  }
  std::string buf(kMaxMessage, '\0');
  while (true) {
    pollfd fds[2] = {{kControlFd, POLLIN, 0}, {sigfd, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[1].revents & POLLIN) {
      signalfd_siginfo info;
      while (read(sigfd, &info, sizeof(info)) == sizeof(info)) {
      }
      reap();
    }
    if (!(fds[0].revents & (POLLIN | POLLHUP | POLLERR))) continue;
    iovec iov{buf.data(), buf.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(2 * sizeof(int))];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    const ssize_t n = recvmsg(kControlFd, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the worker closed its end (or went)
    std::vector<int> received;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        received.push_back(fd);
      }
    }
    auto close_received = [&] {
      for (int fd : received) close(fd);
    };
    v1::ZygoteRequest request;
    if (!request.ParseFromArray(buf.data(), static_cast<int>(n))) {
      close_received();
      v1::ZygoteReply r;
      r.set_error("zygote: malformed request");
      Reply(r);
      continue;
    }
    if (request.has_spawn()) {
      v1::ZygoteReply r;
      if (received.size() != 2) {
        r.set_error("zygote: a spawn request needs the frame and error pipes");
      } else {
        const pid_t pid = fork();
        if (pid == 0) BecomeJobChild(request.spawn(), received[0], received[1]);
        if (pid < 0) {
          r.set_error(absl::StrCat("cannot start the job process: ", std::strerror(errno)));
        } else {
          children.insert(pid);
          r.set_started(pid);
        }
      }
      close_received();
      Reply(r);
    } else {
      close_received();
      // Only a child not yet reaped: its pid cannot have been reused.
      if (request.kind_case() == v1::ZygoteRequest::kKill && children.count(request.kill())) {
        kill(request.kill(), SIGKILL);
      }
    }
  }
  for (pid_t pid : children) kill(pid, SIGKILL);
  while (waitpid(-1, nullptr, 0) > 0) {
  }
  return 0;
}

absl::StatusOr<std::unique_ptr<Zygote>> Zygote::Start(const std::string& program) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return Errno("socketpair");
  // Built before fork: between fork and exec only async-signal-safe calls.
  std::string arg0 = "qopt-worker", arg1 = "zygote";
  char* const argv[] = {arg0.data(), arg1.data(), nullptr};
  // The zygote's environment is what every job starts from: nothing of the worker's.
  std::string path = "PATH=/usr/bin:/bin", lang = "LANG=C.UTF-8";
  char* const envp[] = {path.data(), lang.data(), nullptr};
  const int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  const pid_t pid = fork();
  if (pid == 0) {
    // stdout and stderr stay the worker's: what the zygote itself says lands in its log.
    if (dup2(sv[1], kControlFd) < 0 || dup2(devnull, 0) < 0) _exit(127);
    fcntl(kControlFd, F_SETFD, 0);  // dup2 onto itself keeps close-on-exec
    close_range(kControlFd + 1, ~0U, 0);
    execve(program.c_str(), argv, envp);
    _exit(127);
  }
  close(devnull);
  close(sv[1]);
  if (pid < 0) {
    close(sv[0]);
    return Errno("fork");
  }
  std::unique_ptr<Zygote> zygote(new Zygote(pid, sv[0]));
  v1::ZygoteReply reply;
  std::lock_guard<std::mutex> lock(zygote->mu_);
  // Loading LibTorch takes about a second; a minute means something is wrong.
  ASSIGN_OR_RETURN(const bool answered, zygote->ReadReply(reply, 60000));
  if (!answered || !reply.ready()) return absl::InternalError("zygote: did not start");
  return zygote;
}

Zygote::~Zygote() {
  close(socket_);
  int status;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
}

bool Zygote::alive() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !dead_;
}

absl::Status Zygote::Send(const std::string& bytes, const int* fds, int num_fds) {
  if (dead_ || !SendMessage(socket_, bytes, fds, num_fds)) {
    dead_ = true;
    return absl::UnavailableError("zygote: gone");
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> Zygote::ReadReply(v1::ZygoteReply& reply, int timeout_ms) {
  if (dead_) return absl::UnavailableError("zygote: gone");
  pollfd p{socket_, POLLIN, 0};
  const int ready = poll(&p, 1, timeout_ms);
  if (ready < 0 && errno != EINTR) return Errno("poll");
  if (ready <= 0) return false;
  std::string buf(kMaxMessage, '\0');
  const ssize_t n = recv(socket_, buf.data(), buf.size(), 0);
  if (n < 0 && errno == EINTR) return false;
  if (n <= 0 || !reply.ParseFromArray(buf.data(), static_cast<int>(n))) {
    dead_ = true;
    return absl::UnavailableError("zygote: gone");
  }
  if (reply.has_exited()) exited_[reply.exited().pid()] = reply.exited().status();
  return true;
}

absl::StatusOr<pid_t> Zygote::Spawn(const SandboxOptions& limits, const std::vector<std::string>& env, int frame_fd,
                                    int err_fd) {
  v1::ZygoteRequest request;
  v1::ZygoteSpawn& spawn = *request.mutable_spawn();
  spawn.set_job_dir(limits.job_dir);
  spawn.set_memory_mb(limits.memory_mb);
  spawn.set_cpu_seconds(limits.cpu_seconds);
  spawn.set_keep_uid(!limits.drop_root);
  for (const std::string& e : env) spawn.add_env(e);
  const int fds[2] = {frame_fd, err_fd};
  std::lock_guard<std::mutex> lock(mu_);
  RETURN_IF_ERROR(Send(request.SerializeAsString(), fds, 2));
  while (true) {
    v1::ZygoteReply reply;
    ASSIGN_OR_RETURN(const bool answered, ReadReply(reply, -1));
    if (!answered) continue;
    if (reply.has_error()) return absl::ResourceExhaustedError(reply.error());
    if (reply.kind_case() == v1::ZygoteReply::kStarted) return static_cast<pid_t>(reply.started());
  }
}

void Zygote::Kill(pid_t pid) {
  v1::ZygoteRequest request;
  request.set_kill(pid);
  std::lock_guard<std::mutex> lock(mu_);
  Send(request.SerializeAsString(), nullptr, 0).IgnoreError();
}

absl::StatusOr<int> Zygote::Wait(pid_t pid, const std::function<bool()>& cancelled) {
  bool killed = false;
  while (true) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (auto it = exited_.find(pid); it != exited_.end()) {
        const int status = it->second;
        exited_.erase(it);
        return status;
      }
      v1::ZygoteReply reply;
      ASSIGN_OR_RETURN(const bool answered, ReadReply(reply, 200));
      if (answered) continue;
    }
    if (!killed && cancelled && cancelled()) {
      Kill(pid);
      killed = true;
    }
  }
}

}  // namespace qopt::sandbox
