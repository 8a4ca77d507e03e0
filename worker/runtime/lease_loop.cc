#include "runtime/lease_loop.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "qopt/v1/service.grpc.pb.h"
#include "recipe/recipe.h"
#include "recipe/runner.h"
#include "runtime/checkpoint_uploader.h"
#include "runtime/job_file.h"
#include "sandbox/job_process.h"
#include "recipe_files.h"
#include "sha256.h"
#include "status.h"
#include "utf8.h"

namespace qopt::worker {
namespace {

namespace fs = std::filesystem;

// Writes `header`, then `file`'s `size` bytes as chunk messages of the same type, until
// the stream refuses one.
template <typename Request, typename Writer>
void SendFile(Writer& writer, const Request& header, JobFile& file, int64_t size) {
  if (!writer.Write(header)) return;
  file.SendChunks(size, [&](absl::string_view bytes) {
    Request chunk;
    chunk.set_chunk(bytes.data(), bytes.size());
    return writer.Write(chunk);
  });
}

// gRPC and Abseil number their codes alike.
absl::Status ToAbsl(const grpc::Status& s, const std::string& context) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), absl::StrCat(context, s.error_message()));
}

class Worker {
 public:
  explicit Worker(const LeaseLoopOptions& o) : o_(o) {
    std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
    if (!o.tls_ca_pem.empty()) {
      grpc::SslCredentialsOptions ssl;
      ssl.pem_root_certs = o.tls_ca_pem;
      credentials = grpc::SslCredentials(ssl);
    }
    stub_ = v1::WorkerService::NewStub(grpc::CreateChannel(o.server, credentials));
  }

  // The worker token, and while a job is held its lease's token, which the server needs
  // for every call about the job.
  void Context(grpc::ClientContext* ctx, int deadline_ms) const {
    if (!o_.token.empty()) ctx->AddMetadata("authorization", "Bearer " + o_.token);
    if (!lease_token_.empty()) ctx->AddMetadata("qopt-lease-token", lease_token_);
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms));
  }

  // Local path of a blob whose bytes were just checked against its hash. The cache is
  // shared by the workers of a host and a cached file is not trusted: it is re-hashed
  // before each use and fetched again when it does not match.
  absl::StatusOr<std::string> Fetch(const std::string& sha256) {
    const fs::path path = fs::path(o_.cache_dir) / sha256;
    std::error_code ec;
    if (fs::exists(path, ec)) {
      auto cached = Sha256File(path.string());
      if (cached.ok() && cached->sha256 == sha256) return path.string();
      std::fprintf(stderr, "worker %s: cached blob %s does not match its hash; fetching it again\n",
                   o_.worker_id.c_str(), sha256.c_str());
    }
    RETURN_IF_ERROR(Download(sha256, path));
    return path.string();
  }

  // Fetches a blob to `path` (see DownloadOnce), trying again when it arrives corrupted
  // (DATA_LOSS) or is cut off (UNAVAILABLE).
  absl::Status Download(const std::string& sha256, const fs::path& path) {
    constexpr int kAttempts = 3;
    absl::Status status;
    for (int attempt = 1; attempt <= kAttempts; ++attempt) {
      status = DownloadOnce(sha256, path);
      if (status.ok()) return status;
      if (!absl::IsDataLoss(status) && !absl::IsUnavailable(status)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100 * attempt));
    }
    return status;
  }

  // Fetches a blob into a temporary file of its own beside `path` (two workers fetching
  // the same new blob never share one), checks its hash and renames it into place
  // atomically.
  absl::Status DownloadOnce(const std::string& sha256, const fs::path& path) {
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    const fs::path tmp = path.parent_path() /
                         absl::StrCat(".", sha256, ".", getpid(), "-", absl::Hex(rng()), ".partial");
    struct RemoveTmp {
      const fs::path& tmp;
      ~RemoveTmp() {
        std::error_code ec;
        fs::remove(tmp, ec);  // nothing once renamed
      }
    } remove_tmp{tmp};
    {
      grpc::ClientContext ctx;
      Context(&ctx, 600000);
      v1::ReadBlobRequest req;
      req.set_sha256(sha256);
      auto reader = stub_->ReadBlob(&ctx, req);
      std::ofstream out(tmp, std::ios::binary);
      v1::Chunk chunk;
      while (reader->Read(&chunk)) out.write(chunk.data().data(), static_cast<std::streamsize>(chunk.data().size()));
      RETURN_IF_ERROR(ToAbsl(reader->Finish(), absl::StrCat("fetching blob ", sha256, ": ")));
      out.close();
      if (!out) return absl::ResourceExhaustedError(absl::StrCat("cannot write blob ", sha256, " to the worker's disk"));
    }
    auto digest = Sha256File(tmp.string());
    if (!digest.ok() || digest->sha256 != sha256) {
      return absl::DataLossError(absl::StrCat("blob ", sha256, " arrived corrupted"));
    }
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot store blob ", sha256, " on the worker's disk: ", ec.message()));
    return absl::OkStatus();
  }

  // Replaces the recipe's blob names with cached local files. `local_names` maps each
  // local path back to the field and blob it came from, so errors can name those
  // instead of this worker's cache.
  absl::Status Localize(v1::Recipe* recipe, std::vector<std::pair<std::string, std::string>>* local_names) {
    RETURN_IF_ERROR(EditRecipeFiles(recipe, [&](const std::string& field, std::string* value) -> absl::Status {
      ASSIGN_OR_RETURN(std::string local, Fetch(*value));
      local_names->push_back({local, absl::StrCat(field, " (blob ", value->substr(0, 12), ")")});
      *value = std::move(local);
      return absl::OkStatus();
    }));
    // The server leases a cuda job only to a worker offering cuda: it runs on this
    // worker's GPU whatever index the recipe named; every other job runs on the CPU.
    recipe->set_device(absl::StartsWith(recipe->device(), "cuda") ? o_.device : "cpu");
    return absl::OkStatus();
  }

  // Sends artifact `name`, a file the job's sandboxed process wrote (see JobFile).
  // FAILED_PRECONDITION when the file is refused.
  grpc::Status PutArtifact(const v1::LeaseResponse& lease, const std::string& path, const std::string& name) {
    absl::StatusOr<std::unique_ptr<JobFile>> file = JobFile::Open(path, absl::StrCat("artifact ", name));
    absl::StatusOr<FileDigest> digest = file.ok() ? (*file)->Digest() : file.status();
    if (absl::IsFailedPrecondition(digest.status())) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, std::string(digest.status().message()));
    }
    if (!digest.ok()) return grpc::Status(grpc::StatusCode::INTERNAL, std::string(digest.status().message()));
    grpc::ClientContext ctx;
    Context(&ctx, 600000);
    v1::PutArtifactResponse resp;
    auto writer = stub_->PutArtifact(&ctx, &resp);
    v1::PutArtifactRequest msg;
    msg.set_job_id(lease.job_id());
    msg.set_lease_id(lease.lease_id());
    msg.mutable_header()->set_name(name);
    msg.mutable_header()->set_sha256(digest->sha256);
    msg.mutable_header()->set_size(digest->size);
    SendFile(*writer, msg, **file, digest->size);
    writer->WritesDone();
    return writer->Finish();
  }

  // Sends the job's checkpoint (see JobFile); the server checks its size and hash.
  absl::Status PutCheckpoint(const v1::LeaseResponse& lease, const std::string& path, grpc::ClientContext* ctx,
                             const std::atomic<bool>& stop) {
    ASSIGN_OR_RETURN(std::unique_ptr<JobFile> file, JobFile::Open(path, "checkpoint"));
    ASSIGN_OR_RETURN(FileDigest digest, file->Digest(&stop));
    Context(ctx, 600000);
    v1::Empty empty;
    auto writer = stub_->PutCheckpoint(ctx, &empty);
    v1::PutCheckpointRequest msg;
    msg.set_job_id(lease.job_id());
    msg.set_lease_id(lease.lease_id());
    msg.mutable_header()->set_sha256(digest.sha256);
    msg.mutable_header()->set_size(digest.size);
    SendFile(*writer, msg, *file, digest.size);
    writer->WritesDone();
    return ToAbsl(writer->Finish(), "");
  }

  void RunJob(const v1::LeaseResponse& lease) {
    std::printf("worker %s: job %s leased\n", o_.worker_id.c_str(), lease.job_id().c_str());
    std::fflush(stdout);
    std::mutex mu;
    std::condition_variable done_cv;
    bool done = false;
    std::atomic<bool> cancelled{false};
    Progress latest;
    latest.stage = "starting";
    // Log lines and figures not yet delivered; a heartbeat that fails keeps them.
    struct LogLine {
      std::string line;
      std::shared_ptr<const v1::LayerRow> row;  // the report row the line announces, if any
    };
    std::vector<LogLine> pending_logs;
    std::map<std::string, double> pending_metrics;
    std::vector<v1::StepReport> pending_steps;
    const auto started = std::chrono::steady_clock::now();
    // The lease's length as this worker sees it, and when the server last renewed it: a
    // worker that cannot reach the server for longer has lost the job to another worker
    // (the server re-leases it) and stops working on it.
    // The lease's time left from the server's expiry (at least 10 s, for clock skew).
    const auto left_ms = [](int64_t expires_unix_ms) {
      const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count();
      return std::max<int64_t>(10000, expires_unix_ms - now_ms);
    };
    int64_t lease_left_ms = left_ms(lease.lease_expires_unix_ms());
    auto renewed = started;

    // One heartbeat: extends the lease, carries the latest progress, the pending log
    // lines and figures, and brings cancellation. Called with `mu` held; unlocks it
    // around the RPC.
    auto heartbeat_once = [&](std::unique_lock<std::mutex>& lock) {
      v1::HeartbeatRequest hb;
      hb.set_job_id(lease.job_id());
      hb.set_lease_id(lease.lease_id());
      hb.set_worker_id(o_.worker_id);
      const double overall =
          latest.num_steps > 0 ? (std::max(0, latest.step - 1) + latest.fraction) / latest.num_steps : 0.0;
      hb.set_stage(latest.stage);
      hb.set_progress(overall);
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      hb.set_eta_seconds(overall > 0.01 ? elapsed * (1.0 - overall) / overall : 0.0);
      if (!latest.log) hb.set_message(latest.message);
      std::vector<LogLine> logs;
      logs.swap(pending_logs);
      std::map<std::string, double> figures;
      figures.swap(pending_metrics);
      for (const LogLine& log : logs) {
        if (log.row) (*hb.mutable_log_rows())[hb.log_lines_size()] = *log.row;
        hb.add_log_lines(log.line);
      }
      std::vector<v1::StepReport> steps;
      steps.swap(pending_steps);
      for (const v1::StepReport& step : steps) *hb.add_step_reports() = step;
      hb.mutable_metrics()->insert(figures.begin(), figures.end());
      SanitizeUtf8Fields(&hb);  // log lines can carry raw bytes from the job's files
      lock.unlock();
      grpc::ClientContext ctx;
      Context(&ctx, 5000);
      v1::HeartbeatResponse resp;
      const grpc::Status s = stub_->Heartbeat(&ctx, hb, &resp);
      if ((s.ok() && resp.cancelled()) || s.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
        cancelled = true;  // cancelled, or the lease was lost: stop working on it
      }
      const auto now = std::chrono::steady_clock::now();
      if (s.ok()) {
        renewed = now;
        lease_left_ms = left_ms(resp.lease_expires_unix_ms());
      } else if (!cancelled && now - renewed > std::chrono::milliseconds(lease_left_ms)) {
        cancelled = true;
        std::printf("worker %s: job %s: the server was unreachable for %.0f s, longer than the lease (%s); "
                    "stopping the job, which the server gives to another worker\n",
                    o_.worker_id.c_str(), lease.job_id().c_str(),
                    std::chrono::duration<double>(now - renewed).count(), s.error_message().c_str());
        std::fflush(stdout);
      }
      lock.lock();
      if (!s.ok()) {
        pending_logs.insert(pending_logs.begin(), logs.begin(), logs.end());
        pending_metrics.insert(figures.begin(), figures.end());
        pending_steps.insert(pending_steps.begin(), steps.begin(), steps.end());
      }
    };
    std::thread heartbeat([&] {
      std::unique_lock<std::mutex> lock(mu);
      while (!done) {
        heartbeat_once(lock);
        done_cv.wait_for(lock, std::chrono::milliseconds(o_.heartbeat_ms), [&] { return done; });
      }
    });

    v1::Recipe recipe = lease.recipe();
    // The job's folder, handed to its sandboxed process; the artifacts land in out/.
    const std::string job_dir = (fs::path(o_.work_dir) / lease.job_id()).string();
    const std::string out_dir = (fs::path(job_dir) / "out").string();
    absl::StatusOr<RunSummary> summary = absl::UnknownError("not run");
    std::vector<std::pair<std::string, std::string>> local_names;
    // What the job says names its inputs as the caller knows them (field and blob), its
    // artifacts by their names, never this worker's folders.
    auto caller_names = [&](const std::string& text) {
      std::string said = absl::StrReplaceAll(text, local_names);
      return absl::StrReplaceAll(said, {{out_dir + "/", ""}, {job_dir, "<job folder>"}});
    };
    if (absl::Status s = Localize(&recipe, &local_names); !s.ok()) {
      summary = s;
    } else {
      RunOptions run;
      run.out_dir = out_dir;
      run.worker_id = o_.worker_id;
      run.on_progress = [&](const Progress& given) {
        Progress p = given;
        p.message = caller_names(p.message);
        std::lock_guard<std::mutex> lock(mu);
        latest = p;
        if (p.log) pending_logs.push_back({p.message, p.layer_row});
        for (const auto& [k, v] : p.metrics) pending_metrics[k] = v;
        if (p.step_report) pending_steps.push_back(*p.step_report);
      };
      run.cancelled = [&] { return cancelled.load(); };
      std::error_code ec;
      fs::remove_all(job_dir, ec);
      fs::create_directories(job_dir, ec);
      const std::string checkpoint = sandbox::JobCheckpointPath(job_dir);
      if (!lease.checkpoint_sha256().empty()) {
        // An earlier attempt's checkpoint: training resumes from it. Without it the job
        // starts over, which costs time but not the result.
        const absl::Status fetched = Download(lease.checkpoint_sha256(), checkpoint);
        std::printf("worker %s: job %s: %s\n", o_.worker_id.c_str(), lease.job_id().c_str(),
                    fetched.ok() ? "resuming from the checkpoint of an earlier attempt"
                                 : ("no checkpoint: " + std::string(fetched.message())).c_str());
        std::fflush(stdout);
        if (!fetched.ok()) {
          std::lock_guard<std::mutex> lock(mu);
          pending_logs.push_back({absl::StrCat("the checkpoint of an earlier attempt could not be fetched (",
                                               fetched.message(), "); training starts over"),
                                  nullptr});
        }
      }
      CheckpointUploader uploader(
          [&](grpc::ClientContext* ctx, const std::atomic<bool>& stop) {
            return PutCheckpoint(lease, checkpoint, ctx, stop);
          },
          [&](const absl::Status& sent) {
            std::printf("worker %s: job %s: %s\n", o_.worker_id.c_str(), lease.job_id().c_str(),
                        sent.ok() ? "checkpoint uploaded"
                                  : ("checkpoint not uploaded: " + std::string(sent.message())).c_str());
            std::fflush(stdout);
          });
      run.on_checkpoint = [&] { uploader.Notify(); };
      sandbox::JobProcessOptions job;
      job.job_dir = job_dir;
      job.limits = o_.job_limits;
      job.limits.job_dir = job_dir;
      job.zygote = zygote_.get();
      summary = sandbox::RunJobProcess(recipe, run, job);
      uploader.Finish();
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      done = true;
    }
    done_cv.notify_all();
    heartbeat.join();
    if (!cancelled) {
      // What the last steps logged, before the job's final state.
      std::unique_lock<std::mutex> lock(mu);
      if (!pending_logs.empty() || !pending_metrics.empty() || !pending_steps.empty()) heartbeat_once(lock);
    }

    const auto fail_job = [&](const std::string& error) {
      v1::FailRequest fail;
      fail.set_job_id(lease.job_id());
      fail.set_lease_id(lease.lease_id());
      fail.set_error(SanitizeUtf8(caller_names(error)));
      grpc::ClientContext ctx;
      Context(&ctx, 10000);
      v1::Empty empty;
      stub_->Fail(&ctx, fail, &empty);
      std::printf("worker %s: job %s failed: %s\n", o_.worker_id.c_str(), lease.job_id().c_str(),
                  fail.error().c_str());
    };
    grpc::Status s = grpc::Status::OK;
    if (!cancelled && summary.ok()) {
      for (const auto& name : summary->artifacts) {
        s = PutArtifact(lease, (fs::path(out_dir) / name).string(), name);
        if (!s.ok()) break;
      }
    }
    if (cancelled) {
      std::printf("worker %s: job %s cancelled\n", o_.worker_id.c_str(), lease.job_id().c_str());
    } else if (!summary.ok()) {
      fail_job(std::string(summary.status().message()));
    } else if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
      fail_job(s.error_message());  // an artifact the worker refuses to read
    } else {
      grpc::ClientContext ctx;
      Context(&ctx, 10000);
      v1::Empty empty;
      if (s.ok()) {
        v1::CompleteRequest complete;
        complete.set_job_id(lease.job_id());
        complete.set_lease_id(lease.lease_id());
        complete.set_report_json(caller_names(summary->report_json));
        SanitizeUtf8Fields(&complete);
        s = stub_->Complete(&ctx, complete, &empty);
      }
      std::printf("worker %s: job %s %s\n", o_.worker_id.c_str(), lease.job_id().c_str(),
                  s.ok() ? "succeeded" : ("could not report: " + s.error_message()).c_str());
    }
    std::fflush(stdout);
    std::error_code ec;
    fs::remove_all(job_dir, ec);
  }

  int Loop(const std::atomic<bool>& stop) {
    std::error_code ec;
    fs::create_directories(o_.cache_dir, ec);
    RemoveOrphans();
    fs::create_directories(o_.work_dir, ec);
    int failures = 0;
    while (!stop) {
      grpc::ClientContext ctx;
      Context(&ctx, 15000);
      v1::LeaseRequest req;
      req.set_worker_id(o_.worker_id);
      req.set_device(o_.device);
      // Every worker serves CPU jobs; a GPU worker also its GPU's.
      req.add_devices("cpu");
      if (o_.device != "cpu") req.add_devices(o_.device);
      req.set_wait_ms(5000);
      v1::LeaseResponse lease;
      const grpc::Status s = stub_->Lease(&ctx, req, &lease);
      if (!s.ok()) {
        if (s.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
          std::fprintf(stderr, "error: UNAUTHENTICATED: %s\n", s.error_message().c_str());
          return 1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(std::min(5000, 200 << std::min(failures++, 5))));
        continue;
      }
      failures = 0;
      if (lease.job_id().empty()) continue;
      StartZygote();
      lease_token_ = lease.lease_token();
      RunJob(lease);
      lease_token_.clear();
    }
    return 0;
  }

  // The zygote that forks job children (sandbox/zygote.h), started again if it died.
  // Called from the loop's thread, which the zygote outlives only as long as it runs.
  // Without one, each job's child is an exec of this worker (about a second more).
  void StartZygote() {
    if (zygote_ != nullptr && zygote_->alive()) return;
    zygote_.reset();
    absl::StatusOr<std::unique_ptr<sandbox::Zygote>> started = sandbox::Zygote::Start();
    if (started.ok()) {
      zygote_ = std::move(*started);
    } else {
      std::printf("worker %s: no zygote (%s); each job's process starts from exec\n", o_.worker_id.c_str(),
                  std::string(started.status().message()).c_str());
      std::fflush(stdout);
    }
  }

  // What workers of this host that died (kill -9, OOM) left behind: their job folders
  // ($TMPDIR/qopt-worker-<pid> of a process that no longer runs) and their unfinished
  // fetches in the shared cache (temporary files untouched for an hour).
  void RemoveOrphans() const {
    std::error_code ec;
    const fs::path own = fs::path(o_.work_dir);
    for (fs::directory_iterator it(own.parent_path(), ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      int pid = 0;
      if (!absl::StartsWith(name, "qopt-worker-") || !absl::SimpleAtoi(name.substr(12), &pid) || pid <= 0) continue;
      if (it->path() == own || kill(pid, 0) == 0 || errno != ESRCH) continue;
      std::error_code rm;
      if (fs::remove_all(it->path(), rm) > 0 && !rm) {
        std::printf("worker %s: removed %s, left by a worker that exited\n", o_.worker_id.c_str(), name.c_str());
      }
    }
    const auto cutoff = fs::file_time_type::clock::now() - std::chrono::hours(1);
    for (fs::directory_iterator it(o_.cache_dir, ec), end; !ec && it != end; it.increment(ec)) {
      if (!absl::EndsWith(it->path().filename().string(), ".partial")) continue;
      std::error_code file_ec;
      if (it->last_write_time(file_ec) < cutoff && !file_ec) fs::remove(it->path(), file_ec);
    }
  }

 private:
  LeaseLoopOptions o_;
  std::unique_ptr<v1::WorkerService::Stub> stub_;
  std::string lease_token_;  // of the job being run; set and cleared by Loop
  std::unique_ptr<sandbox::Zygote> zygote_;
};

}  // namespace

int RunLeaseLoop(const LeaseLoopOptions& options, const std::atomic<bool>& stop) {
  Worker worker(options);
  return worker.Loop(stop);
}

}  // namespace qopt::worker
