// Service benchmark against a running qopt-server (no local workers; this program plays
// the workers):
//   upload of a large blob, download of the same bytes as a job's artifact (written to a
//   file and fsync'd, as `cp` + `sync` would), submit-to-lease latency with an idle worker,
//   throughput of trivial jobs (lease + complete at once), and many concurrent WatchJob
//   streams.
//
//   service_bench --server HOST:PORT --file BIG_FILE [--download-to PATH] [--jobs 1000]
//                 [--watchers 200]
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "chunk_messages.h"

#include "qopt/v1/service.grpc.pb.h"
#include "durable_file.h"
#include "sha256.h"
#include "stream_memory.h"

namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))];
}

qopt::v1::Recipe TrivialRecipe(const std::string& model_sha) {
  qopt::v1::Recipe r;
  r.set_name("trivial");
  r.mutable_model()->set_path(model_sha);
  r.add_steps()->mutable_export_();
  return r;
}

// One trivial job queued.
qopt::v1::Job Submit(qopt::v1::JobService::Stub& jobs, const std::string& model_sha) {
  grpc::ClientContext ctx;
  qopt::v1::SubmitJobRequest req;
  *req.mutable_recipe() = TrivialRecipe(model_sha);
  qopt::v1::Job job;
  jobs.SubmitJob(&ctx, req, &job);
  return job;
}

// A worker's lease (empty job_id when none arrived in `wait_ms`).
qopt::v1::LeaseResponse Lease(qopt::v1::WorkerService::Stub& workers, const std::string& id, int wait_ms) {
  grpc::ClientContext ctx;
  qopt::v1::LeaseRequest req;
  req.set_worker_id(id);
  req.set_wait_ms(wait_ms);
  qopt::v1::LeaseResponse lease;
  if (!workers.Lease(&ctx, req, &lease).ok()) lease.Clear();
  return lease;
}

// A worker's call on behalf of `lease` carries its token, as the worker's lease loop does.
void AddLeaseToken(grpc::ClientContext& ctx, const qopt::v1::LeaseResponse& lease) {
  ctx.AddMetadata("qopt-lease-token", lease.lease_token());
}

// Completes a leased job at once, as a worker with nothing to do would.
bool Complete(qopt::v1::WorkerService::Stub& workers, const qopt::v1::LeaseResponse& lease) {
  grpc::ClientContext ctx;
  AddLeaseToken(ctx, lease);
  qopt::v1::CompleteRequest done;
  done.set_job_id(lease.job_id());
  done.set_lease_id(lease.lease_id());
  qopt::v1::Empty empty;
  return workers.Complete(&ctx, done, &empty).ok();
}

// Streams the file's bytes as `msg`'s chunk field, 1 MiB per message, read straight into
// the message as the CLI does; stops early when the stream breaks.
template <typename Message, typename Writer>
void WriteFileChunks(const std::string& path, Message& msg, Writer& writer) {
  std::ifstream in(path, std::ios::binary);
  std::string* data = msg.mutable_chunk();
  while (in) {
    data->resize(1 << 20);
    in.read(data->data(), static_cast<std::streamsize>(data->size()));
    if (in.gcount() <= 0) break;
    data->resize(static_cast<size_t>(in.gcount()));
    if (!writer.Write(msg)) break;
  }
}

// Uploads the file as the CLI does: chunks read straight into the messages gRPC sends.
std::string Upload(grpc::Channel& channel, const std::string& path, const std::string& sha, int64_t size) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "cannot open " + path;
  grpc::ClientContext ctx;
  qopt::v1::UploadResponse resp;
  auto writer = qopt::OpenWireStream(&channel, absl::StrCat("/", qopt::v1::BlobService::service_full_name(), "/Upload"),
                                     &ctx, &resp);
  qopt::v1::UploadRequest header;
  header.mutable_header()->set_sha256(sha);
  header.mutable_header()->set_size(size);
  const absl::StatusOr<bool> streaming =
      qopt::WriteHeaderAndChunks(*writer, header, fd, path, qopt::v1::UploadRequest::kChunkFieldNumber, 1 << 20);
  close(fd);
  if (!streaming.ok()) return std::string(streaming.status().message());
  if (*streaming) writer->WritesDone();
  grpc::Status s = writer->Finish();
  return s.ok() ? "" : s.error_message();
}

// Attaches the file as artifact `name` of the leased job, as a worker does.
std::string PutArtifact(qopt::v1::WorkerService::Stub& workers, const qopt::v1::LeaseResponse& lease,
                        const std::string& path, const std::string& name, const qopt::FileDigest& digest) {
  grpc::ClientContext ctx;
  AddLeaseToken(ctx, lease);
  qopt::v1::PutArtifactResponse resp;
  auto writer = workers.PutArtifact(&ctx, &resp);
  qopt::v1::PutArtifactRequest msg;
  msg.set_job_id(lease.job_id());
  msg.set_lease_id(lease.lease_id());
  msg.mutable_header()->set_name(name);
  msg.mutable_header()->set_sha256(digest.sha256);
  msg.mutable_header()->set_size(digest.size);
  writer->Write(msg);
  WriteFileChunks(path, msg, *writer);
  writer->WritesDone();
  grpc::Status s = writer->Finish();
  return s.ok() ? "" : s.error_message();
}

// Downloads artifact `name` of `job_id` into `path` as the CLI does (DurableFileWriter:
// sha256 while receiving, fsync, rename), so the time compares with `cp` + `sync`.
std::string Download(qopt::v1::JobService::Stub& jobs, const std::string& job_id, const std::string& name,
                     const std::string& path, const std::string& sha256) {
  auto file = qopt::DurableFileWriter::Create(path);
  if (!file.ok()) return std::string(file.status().message());
  grpc::ClientContext ctx;
  qopt::v1::DownloadArtifactRequest req;
  req.set_job_id(job_id);
  req.set_name(name);
  auto reader = jobs.DownloadArtifact(&ctx, req);
  qopt::v1::Chunk chunk;
  absl::Status written;
  while (written.ok() && reader->Read(&chunk)) written = (*file)->Append(std::move(*chunk.mutable_data()));
  if (!written.ok()) ctx.TryCancel();
  grpc::Status s = reader->Finish();
  if (!written.ok()) return std::string(written.message());
  if (!s.ok()) return s.error_message();
  if ((*file)->Digest().sha256 != sha256) return "downloaded bytes do not match the artifact's sha256";
  absl::Status committed = (*file)->Commit();
  return committed.ok() ? "" : std::string(committed.message());
}

}  // namespace

int main(int argc, char** argv) {
  qopt::KeepStreamBuffersForReuse();  // as the CLI does
  std::string server, file, download_to;
  int jobs = 1000, watchers = 200;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--server") server = argv[i + 1];
    else if (flag == "--file") file = argv[i + 1];
    else if (flag == "--download-to") download_to = argv[i + 1];
    else if (flag == "--jobs") jobs = std::stoi(argv[i + 1]);
    else if (flag == "--watchers") watchers = std::stoi(argv[i + 1]);
  }
  if (server.empty() || file.empty()) {
    std::fprintf(stderr, "usage: service_bench --server HOST:PORT --file BIG_FILE [--download-to PATH] [--jobs N] [--watchers N]\n");
    return 2;
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(server, grpc::InsecureChannelCredentials(), args);
  auto job_api = qopt::v1::JobService::NewStub(channel);
  auto worker_api = qopt::v1::WorkerService::NewStub(channel);

  // 1. Upload (the file's hash is computed first: the server hashes while receiving).
  auto digest = qopt::Sha256File(file);
  if (!digest.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(digest.status().message()).c_str());
    return 1;
  }
  auto t0 = Clock::now();
  const std::string err = Upload(*channel, file, digest->sha256, digest->size);
  const double upload_s = Seconds(t0);
  if (!err.empty()) {
    std::fprintf(stderr, "error: upload: %s\n", err.c_str());
    return 1;
  }
  std::printf("upload %.0f MiB: %.3f s (%.0f MiB/s)\n", digest->size / 1048576.0, upload_s,
              digest->size / 1048576.0 / upload_s);
  std::fflush(stdout);

  // 2. Download of the same bytes as a job's artifact.
  if (!download_to.empty()) {
    const qopt::v1::Job job = Submit(*job_api, digest->sha256);
    const qopt::v1::LeaseResponse lease = Lease(*worker_api, "bench", 5000);
    std::string put_err = lease.job_id() == job.id() ? PutArtifact(*worker_api, lease, file, "blob.bin", *digest)
                                                     : "the bench's job was not leased to it";
    if (put_err.empty() && !Complete(*worker_api, lease)) put_err = "cannot complete the job";
    if (!put_err.empty()) {
      std::fprintf(stderr, "error: artifact: %s\n", put_err.c_str());
      return 1;
    }
    t0 = Clock::now();
    const std::string download_err = Download(*job_api, job.id(), "blob.bin", download_to, digest->sha256);
    const double download_s = Seconds(t0);
    if (!download_err.empty()) {
      std::fprintf(stderr, "error: download: %s\n", download_err.c_str());
      return 1;
    }
    std::printf("download %.0f MiB: %.3f s (%.0f MiB/s)\n", digest->size / 1048576.0, download_s,
                digest->size / 1048576.0 / download_s);
    std::fflush(stdout);
  }

  // 3. Submit-to-lease latency with an idle worker long-polling.
  std::vector<double> latency;
  for (int i = 0; i < 200; ++i) {
    Clock::time_point submitted;
    std::thread worker([&] {
      const qopt::v1::LeaseResponse lease = Lease(*worker_api, "bench", 5000);
      latency.push_back(Seconds(submitted) * 1000.0);
      Complete(*worker_api, lease);
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // the worker is waiting
    submitted = Clock::now();
    Submit(*job_api, digest->sha256);
    worker.join();
  }
  std::printf("submit-to-lease latency over %zu jobs: p50 %.2f ms, p99 %.2f ms\n", latency.size(),
              Percentile(latency, 0.5), Percentile(latency, 0.99));
  std::fflush(stdout);

  // 4. Throughput: submit N trivial jobs, 4 workers lease and complete them.
  t0 = Clock::now();
  std::atomic<int> completed{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < 4; ++w) {
    workers.emplace_back([&, w] {
      while (completed < jobs) {
        const qopt::v1::LeaseResponse lease = Lease(*worker_api, "bench-" + std::to_string(w), 200);
        if (!lease.job_id().empty() && Complete(*worker_api, lease)) ++completed;
      }
    });
  }
  for (int i = 0; i < jobs; ++i) Submit(*job_api, digest->sha256);
  for (auto& t : workers) t.join();
  const double throughput_s = Seconds(t0);
  std::printf("%d trivial jobs submitted, leased and completed: %.2f s (%.0f jobs/s)\n", jobs,
              throughput_s, jobs / throughput_s);
  std::fflush(stdout);

  // 5. Concurrent watchers of one job, from submission to the final event.
  const qopt::v1::Job job = Submit(*job_api, digest->sha256);
  std::atomic<int> finished{0};
  std::vector<std::thread> streams;
  for (int i = 0; i < watchers; ++i) {
    streams.emplace_back([&] {
      grpc::ClientContext ctx;
      qopt::v1::WatchJobRequest req;
      req.set_id(job.id());
      auto reader = job_api->WatchJob(&ctx, req);
      qopt::v1::JobEvent e;
      while (reader->Read(&e)) {
        if (e.state() == qopt::v1::SUCCEEDED) ++finished;
      }
      reader->Finish();
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  t0 = Clock::now();
  Complete(*worker_api, Lease(*worker_api, "bench", 5000));
  for (auto& t : streams) t.join();
  std::printf("%d concurrent WatchJob streams: %d saw SUCCEEDED, %.2f s from lease to the last stream's end\n",
              watchers, finished.load(), Seconds(t0));
  return 0;
}
