#include "sandbox/job_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "qopt/v1/job_process.pb.h"
#include "recipe_files.h"
#include "status.h"

namespace qopt::sandbox {
namespace {

namespace fs = std::filesystem;

constexpr int kFrameFd = 3;
// A frame larger than this is a broken child, not a report.
constexpr uint32_t kMaxFrame = 256u << 20;

bool WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool WriteFrame(int fd, const v1::JobFrame& frame) {
  const std::string bytes = frame.SerializeAsString();
  const uint32_t size = static_cast<uint32_t>(bytes.size());
  const char header[4] = {static_cast<char>(size), static_cast<char>(size >> 8), static_cast<char>(size >> 16),
                          static_cast<char>(size >> 24)};
  return WriteAll(fd, header, 4) && WriteAll(fd, bytes.data(), bytes.size());
}

v1::JobProgress ToFrame(const Progress& p) {
  v1::JobProgress f;
  f.set_step(p.step);
  f.set_num_steps(p.num_steps);
  f.set_stage(p.stage);
  f.set_fraction(p.fraction);
  f.set_message(p.message);
  f.set_log(p.log);
  f.mutable_metrics()->insert(p.metrics.begin(), p.metrics.end());
  if (p.step_report) *f.mutable_step_report() = *p.step_report;
  if (p.layer_row) *f.mutable_layer_row() = *p.layer_row;
  return f;
}

Progress FromFrame(const v1::JobProgress& f) {
  Progress p;
  p.step = f.step();
  p.num_steps = f.num_steps();
  p.stage = f.stage();
  p.fraction = f.fraction();
  p.message = f.message();
  p.log = f.log();
  p.metrics.insert(f.metrics().begin(), f.metrics().end());
  if (f.has_step_report()) p.step_report = std::make_shared<const v1::StepReport>(f.step_report());
  if (f.has_layer_row()) p.layer_row = std::make_shared<const v1::LayerRow>(f.layer_row());
  return p;
}

// Splits complete frames off the front of `buffer`. False on a malformed frame.
bool TakeFrames(std::string& buffer, std::vector<v1::JobFrame>& frames) {
  while (buffer.size() >= 4) {
    const auto* b = reinterpret_cast<const unsigned char*>(buffer.data());
    const uint32_t size = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
    if (size > kMaxFrame) return false;
    if (buffer.size() < 4 + size) break;
    v1::JobFrame frame;
    if (!frame.ParseFromArray(buffer.data() + 4, static_cast<int>(size))) return false;
    frames.push_back(std::move(frame));
    buffer.erase(0, 4 + size);
  }
  return true;
}

std::string SignalName(int sig) {
  const char* name = sigabbrev_np(sig);
  return name ? absl::StrCat("SIG", name) : absl::StrCat("signal ", sig);
}

// The last non-empty line of what the child wrote to stderr (a LibTorch abort's
// "what():" line where there is one).
std::string LastErrorLine(const std::string& text) {
  std::string last, what;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (line.find("what():") != std::string::npos) what = line;
    if (!line.empty() && line.rfind("frame #", 0) != 0 && line.rfind("Exception raised from", 0) != 0) last = line;
    start = end + 1;
  }
  return what.empty() ? last : what;
}

// The job's input files, linked (or copied) into its folder: the sandboxed child reads
// them there and needs no access to the worker's cache. `renamed` maps each placed path
// back to the original, so that messages name what the caller knows.
absl::Status PlaceInputs(v1::Recipe& recipe, const fs::path& job_dir,
                         std::vector<std::pair<std::string, std::string>>* renamed) {
  std::error_code ec;
  fs::create_directories(job_dir / "in", ec);
  int n = 0;
  return EditRecipeFiles(&recipe, [&](const std::string& field, std::string* value) -> absl::Status {
    if (value->empty() || !fs::is_regular_file(*value, ec)) return absl::OkStatus();
    const fs::path placed = job_dir / "in" / absl::StrCat(n++, "-", fs::path(*value).filename().string());
    fs::create_hard_link(*value, placed, ec);
    if (ec) {
      ec.clear();
      fs::copy_file(*value, placed, ec);
    }
    if (ec) return absl::InternalError(absl::StrCat("cannot place ", field, " in the job's folder: ", ec.message()));
    fs::permissions(placed, fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read,
                    fs::perm_options::add, ec);
    renamed->push_back({placed.string(), *value});
    *value = placed.string();
    return absl::OkStatus();
  });
}

}  // namespace

std::string JobCheckpointPath(const std::string& job_dir) { return (fs::path(job_dir) / "checkpoint.qopt").string(); }

bool SetUpJobChildDescriptors(int frame_fd, int err_fd) {
  // The frame pipe moves first: it may sit on 1 or 2 when the worker runs without them.
  if (dup2(frame_fd, kFrameFd) < 0 || dup2(err_fd, 1) < 0 || dup2(err_fd, 2) < 0) return false;
  const int devnull = open("/dev/null", O_RDONLY);
  if (devnull < 0 || dup2(devnull, 0) < 0) return false;
  for (int fd = 0; fd <= kFrameFd; ++fd) fcntl(fd, F_SETFD, 0);  // dup2 onto itself keeps close-on-exec
  close_range(kFrameFd + 1, ~0U, 0);
  return true;
}

absl::StatusOr<RunSummary> RunJobProcess(const v1::Recipe& original, const RunOptions& run,
                                         const JobProcessOptions& options) {
  const fs::path job_dir = options.job_dir;
  v1::Recipe recipe = original;
  std::vector<std::pair<std::string, std::string>> renamed;
  RETURN_IF_ERROR(PlaceInputs(recipe, job_dir, &renamed));
  auto restore = [&](const std::string& text) { return absl::StrReplaceAll(text, renamed); };
  {
    std::ofstream out(job_dir / "recipe.pb", std::ios::binary);
    if (!recipe.SerializeToOstream(&out) || !out.flush()) {
      return absl::InternalError("cannot write the job's recipe into its folder");
    }
  }
  std::error_code ec;
  fs::create_directories(job_dir / "tmp", ec);
  // uid 65534 must be able to reach the folder: every ancestor searchable by others.
  bool reachable = true;
  for (fs::path p = fs::absolute(job_dir, ec).parent_path(); !p.empty() && p != p.root_path(); p = p.parent_path()) {
    if ((fs::status(p, ec).permissions() & fs::perms::others_exec) == fs::perms::none) reachable = false;
  }
  const bool drop_root = geteuid() == 0 && reachable;
  if (drop_root) {
    // The child gives up root; its folder must be its own, and a checkpoint to resume from.
    std::vector<fs::path> own = {job_dir, job_dir / "tmp", job_dir / "recipe.pb"};
    if (const fs::path checkpoint = JobCheckpointPath(job_dir); fs::is_regular_file(checkpoint, ec)) {
      own.push_back(checkpoint);
    }
    for (const fs::path& p : own) {
      if (chown(p.c_str(), options.limits.uid, options.limits.gid) != 0) {
        return absl::InternalError(absl::StrCat("cannot hand the job folder to uid ", options.limits.uid, ": ",
                                                std::strerror(errno)));
      }
    }
  }

  int frames_pipe[2], err_pipe[2];
  if (pipe2(frames_pipe, O_CLOEXEC) != 0) return absl::InternalError("pipe failed");
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    close(frames_pipe[0]);
    close(frames_pipe[1]);
    return absl::InternalError("pipe failed");
  }
  const SandboxOptions& l = options.limits;
  // A clean environment: none of the worker's credentials (QOPT_TOKEN, TLS settings).
  std::vector<std::string> env = {"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "HOME=" + job_dir.string(),
                                  "TMPDIR=" + (job_dir / "tmp").string()};
  if (const char* cuda = std::getenv("CUDA_VISIBLE_DEVICES")) env.push_back(absl::StrCat("CUDA_VISIBLE_DEVICES=", cuda));
  // Named in the job's report.
  if (!run.worker_id.empty()) env.push_back(absl::StrCat(kWorkerIdVariable, "=", run.worker_id));
  pid_t pid = -1;
  absl::Status started;
  if (options.zygote != nullptr) {
    SandboxOptions limits = l;
    limits.job_dir = job_dir.string();
    limits.drop_root = drop_root;
    absl::StatusOr<pid_t> spawned = options.zygote->Spawn(limits, env, frames_pipe[1], err_pipe[1]);
    if (spawned.ok()) pid = *spawned;
    started = spawned.status();
  } else {
    // Everything the child needs is built before fork: after it, only exec-safe calls.
    std::vector<std::string> args = {"qopt-worker", "job", "--job-dir", job_dir.string(),
                                     "--memory-mb", std::to_string(l.memory_mb), "--cpu-seconds",
                                     std::to_string(l.cpu_seconds)};
    if (!drop_root) args.push_back("--keep-uid");
    std::vector<char*> argv, envp;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (std::string& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    pid = fork();
    if (pid == 0) {
      if (!SetUpJobChildDescriptors(frames_pipe[1], err_pipe[1])) _exit(127);
      execve(options.program.c_str(), argv.data(), envp.data());
      _exit(127);
    }
    if (pid < 0) {
      started = absl::ResourceExhaustedError(absl::StrCat("cannot start the job process: ", std::strerror(errno)));
    }
  }
  close(frames_pipe[1]);
  close(err_pipe[1]);
  if (!started.ok()) {
    close(frames_pipe[0]);
    close(err_pipe[0]);
    return started;
  }
  auto kill_child = [&] {
    if (options.zygote != nullptr) {
      options.zygote->Kill(pid);
    } else {
      kill(pid, SIGKILL);
    }
  };

  std::string frame_bytes, err_text;
  std::vector<v1::JobFrame> frames;
  std::optional<v1::JobResult> result;
  bool malformed = false, killed = false;
  pollfd fds[2] = {{frames_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  char buf[1 << 16];
  while (open_fds > 0) {
    if (!killed && run.cancelled && run.cancelled()) {
      kill_child();
      killed = true;
    }
    if (poll(fds, 2, 200) < 0 && errno != EINTR) break;
    for (pollfd& p : fds) {
      if (p.fd < 0 || !(p.revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const ssize_t n = read(p.fd, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        close(p.fd);
        p.fd = -1;
        --open_fds;
        continue;
      }
      if (p.fd == frames_pipe[0]) {
        frame_bytes.append(buf, static_cast<size_t>(n));
        if (!TakeFrames(frame_bytes, frames)) malformed = true;
        for (const v1::JobFrame& f : frames) {
          if (f.has_progress() && run.on_progress) {
            Progress p = FromFrame(f.progress());
            p.message = restore(p.message);
            run.on_progress(p);
          }
          if (f.has_checkpoint() && run.on_checkpoint) run.on_checkpoint();
          if (f.has_result()) result = f.result();
        }
        frames.clear();
      } else if (err_text.size() < (1 << 20)) {
        err_text.append(buf, static_cast<size_t>(n));
      }
    }
  }
  // A child that closed its pipes may still run: cancellation keeps working while we wait.
  auto cancel_now = [&] {
    if (killed || !run.cancelled || !run.cancelled()) return false;
    killed = true;
    return true;
  };
  int status = 0;
  if (options.zygote != nullptr) {
    absl::StatusOr<int> waited = options.zygote->Wait(pid, cancel_now);
    if (!waited.ok()) return absl::InternalError(absl::StrCat("the job process: ", waited.status().message()));
    status = *waited;
  } else {
    while (true) {
      const pid_t done = waitpid(pid, &status, WNOHANG);
      if (done == pid || (done < 0 && errno != EINTR)) break;
      if (cancel_now()) kill(pid, SIGKILL);
      if (done == 0) usleep(20000);
    }
  }

  if (killed) return absl::CancelledError("job cancelled");
  const std::string last = restore(LastErrorLine(err_text));
  const std::string said = last.empty() ? "" : absl::StrCat("; its last error line: ", last);
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    return absl::InternalError(absl::StrCat("the job process was killed by ", SignalName(sig),
                                            sig == SIGKILL ? " (out of memory, or killed from outside)" : "",
                                            said));
  }
  if (malformed || !result) {
    return absl::InternalError(absl::StrCat("the job process exited with code ", WEXITSTATUS(status),
                                            " without a result", said));
  }
  if (result->code() != 0) {
    return absl::Status(static_cast<absl::StatusCode>(result->code()), restore(result->error()));
  }
  RunSummary summary;
  summary.artifacts.assign(result->artifacts().begin(), result->artifacts().end());
  summary.metrics.insert(result->metrics().begin(), result->metrics().end());
  summary.report = result->report();
  summary.report_json = restore(result->report_json());
  return summary;
}

int RunJobChild(const SandboxOptions& limits) {
  auto send_result = [](const absl::StatusOr<RunSummary>& summary) {
    v1::JobFrame frame;
    v1::JobResult& r = *frame.mutable_result();
    if (!summary.ok()) {
      r.set_code(static_cast<int>(summary.status().code()));
      r.set_error(std::string(summary.status().message()));
    } else {
      r.mutable_artifacts()->Add(summary->artifacts.begin(), summary->artifacts.end());
      r.mutable_metrics()->insert(summary->metrics.begin(), summary->metrics.end());
      *r.mutable_report() = summary->report;
      r.set_report_json(summary->report_json);
    }
    return WriteFrame(kFrameFd, frame) ? 0 : 1;
  };
  const absl::StatusOr<SandboxReport> sandbox = EnterSandbox(limits);
  if (!sandbox.ok()) return send_result(sandbox.status());
  const fs::path job_dir = limits.job_dir;
  v1::Recipe recipe;
  {
    std::ifstream in(job_dir / "recipe.pb", std::ios::binary);
    if (!recipe.ParseFromIstream(&in)) return send_result(absl::InternalError("the job's recipe is unreadable"));
  }
  RunOptions run;
  run.out_dir = (job_dir / "out").string();
  if (const char* worker = std::getenv(kWorkerIdVariable)) run.worker_id = worker;
  run.checkpoint_path = JobCheckpointPath(job_dir.string());
  run.on_checkpoint = [] {
    v1::JobFrame frame;
    frame.mutable_checkpoint();
    WriteFrame(kFrameFd, frame);
  };
  bool first = true;
  run.on_progress = [&](const Progress& p) {
    v1::JobFrame frame;
    *frame.mutable_progress() = ToFrame(p);
    WriteFrame(kFrameFd, frame);
    if (first) {
      // The confinement, once, in the job's log.
      first = false;
      Progress line = p;
      line.log = true;
      line.message = absl::StrCat("sandbox: ", sandbox->Describe());
      v1::JobFrame said;
      *said.mutable_progress() = ToFrame(line);
      WriteFrame(kFrameFd, said);
    }
  };
  return send_result(RunRecipe(recipe, run));
}

}  // namespace qopt::sandbox
