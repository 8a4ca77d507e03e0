// qopt-server: the job service. Stores jobs in SQLite (WAL) and blobs as content-addressed
// files under --data-dir, leases jobs to workers, and optionally runs local workers.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <prometheus/exposer.h>

#include "api/malformed_request.h"
#include "api/services.h"
#include "file_text.h"
#include "stream_memory.h"

namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

std::string DefaultWorkerBinary() {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec).parent_path();
  for (const fs::path& p : {self / "qopt-worker", self.parent_path() / "worker" / "qopt-worker"}) {
    if (fs::exists(p, ec)) return p.string();
  }
  return "qopt-worker";
}

pid_t StartWorker(const std::string& binary, const std::string& server, int index,
                  const std::string& token, const std::string& tls_ca) {
  const pid_t pid = fork();
  if (pid == 0) {
    // Local workers end with the server, even one killed with SIGKILL.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (!token.empty()) setenv("QOPT_TOKEN", token.c_str(), 1);
    // The server's own certificate is what its local workers trust.
    if (!tls_ca.empty()) setenv("QOPT_TLS_CA", tls_ca.c_str(), 1);
    const std::string id = "local-" + std::to_string(index);
    execl(binary.c_str(), binary.c_str(), "--server", server.c_str(), "--worker-id", id.c_str(),
          "--device", "cpu", static_cast<char*>(nullptr));
    std::fprintf(stderr, "error: cannot start worker %s\n", binary.c_str());
    _exit(127);
  }
  return pid;
}

bool IsLoopback(const std::string& listen) {
  const std::string host = listen.substr(0, listen.rfind(':'));
  return host == "127.0.0.1" || host == "localhost" || host == "[::1]" || host == "::1";
}

// Removes expired .part files and blobs nothing refers to; logs what it freed.
void CollectGarbage(qopt::server::Catalog& catalog, int64_t part_max_age_ms) {
  auto collected = catalog.CollectGarbage(part_max_age_ms);
  if (!collected.ok()) {
    std::fprintf(stderr, "garbage collection: %s\n", std::string(collected.status().message()).c_str());
  } else if (collected->parts > 0 || collected->blobs > 0) {
    std::printf("garbage collection: removed %lld expired partial uploads (%lld bytes) and %lld unreferenced "
                "blobs (%lld bytes)\n",
                static_cast<long long>(collected->parts), static_cast<long long>(collected->part_bytes),
                static_cast<long long>(collected->blobs), static_cast<long long>(collected->blob_bytes));
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace qopt::server;
  qopt::KeepStreamBuffersForReuse();
  qopt::GrowHeapForStreams();
  CLI::App app{"qopt-server: the qopt job service"};
  std::string listen = "127.0.0.1:50051", data_dir, auth_file, metrics_listen, tls_cert, tls_key,
              worker_binary = DefaultWorkerBinary();
  int local_workers = 0;
  JobStore::Options store_options;
  Catalog::Options catalog_options;
  ServerLimits limits;
  bool allow_open_remote = false;
  int upload_idle_seconds = 60, max_job_seconds = 86400;
  int64_t part_expiry_seconds = 86400;
  app.add_option("--listen", listen, "HOST:PORT to serve gRPC on");
  app.add_option("--data-dir", data_dir, "Directory for the database and blobs")->required();
  app.add_option("--local-workers", local_workers, "Worker processes to start on this host");
  app.add_option("--worker-binary", worker_binary, "qopt-worker used for --local-workers");
  app.add_option("--auth-file", auth_file,
                 "JSON {\"tenants\": {token: tenant}, \"worker_tokens\": [...]}; none = open");
  app.add_option("--lease-ms", store_options.lease_ms, "Worker lease length");
  app.add_option("--max-attempts", store_options.max_attempts, "Leases per job before it fails");
  app.add_option("--max-upload-bytes", limits.max_upload_bytes, "Largest blob accepted");
  app.add_option("--quota-bytes", catalog_options.quota_bytes,
                 "Storage per tenant (uploads and artifacts); 0 = unlimited");
  app.add_option("--metrics-listen", metrics_listen, "HOST:PORT serving Prometheus /metrics");
  app.add_option("--tls-cert", tls_cert, "PEM certificate chain: serve gRPC over TLS")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-key", tls_key, "PEM private key of --tls-cert")->check(CLI::ExistingFile);
  app.add_flag("--allow-open-remote", allow_open_remote,
               "Without --auth-file, listen on a non-loopback address anyway (anyone reaching it may act as a worker)");
  app.add_option("--upload-idle-seconds", upload_idle_seconds,
                 "Cancel an upload stream that sends nothing for this long")->check(CLI::Range(1, 86400));
  app.add_option("--max-uploads-per-tenant", limits.max_uploads_per_tenant,
                 "Upload streams one tenant may have open at once")->check(CLI::Range(1, 100000));
  app.add_option("--max-uploads", limits.max_uploads,
                 "Upload streams all tenants together may have open at once")->check(CLI::Range(1, 100000));
  app.add_option("--part-expiry-seconds", part_expiry_seconds,
                 "Remove an interrupted upload's partial file untouched for this long")->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  app.add_option("--max-running-jobs-per-tenant", store_options.max_running_per_tenant,
                 "Jobs of one tenant running at once; 0 = no limit")->check(CLI::NonNegativeNumber);
  app.add_option("--max-priority", limits.max_priority, "Highest job priority accepted (higher: INVALID_ARGUMENT)");
  app.add_option("--max-job-seconds", max_job_seconds,
                 "Longest run of one job; a recipe's time_limit_seconds may ask for less; 0 = no limit")
      ->check(CLI::NonNegativeNumber);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  store_options.max_job_ms = int64_t{max_job_seconds} * 1000;
  if (part_expiry_seconds <= upload_idle_seconds) {
    std::fprintf(stderr, "error: --part-expiry-seconds must be longer than --upload-idle-seconds\n");
    return 2;
  }
  if (auth_file.empty() && !IsLoopback(listen)) {
    if (!allow_open_remote) {
      std::fprintf(stderr,
                   "error: without --auth-file the server is open (every caller is tenant 'default' and may act "
                   "as a worker), so it listens on loopback only; give --auth-file, or --allow-open-remote to "
                   "serve %s anyway\n", listen.c_str());
      return 2;
    }
    std::fprintf(stderr, "warning: open server (no --auth-file) listening on %s: anyone who reaches it may "
                 "read and change every job and act as a worker\n", listen.c_str());
  }
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  auto db = StoreDb::Open(data_dir + "/qopt.db");
  auto blobs = BlobStore::Open(data_dir);
  if (!db.ok() || !blobs.ok()) {
    std::fprintf(stderr, "error: %s\n",
                 std::string((db.ok() ? blobs.status() : db.status()).message()).c_str());
    return 1;
  }
  auto jobs = JobStore::Open(*db, store_options);
  if (!jobs.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(jobs.status().message()).c_str());
    return 1;
  }
  Catalog catalog(*db, blobs->get(), catalog_options);
  Authenticator auth = Authenticator::Open();
  if (!auth_file.empty()) {
    auto a = Authenticator::FromFile(auth_file);
    if (!a.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(a.status().message()).c_str());
      return 2;
    }
    auth = *a;
  }

  Metrics metrics;
  (*jobs)->set_on_finished([&metrics](const qopt::v1::Job& job) { metrics.JobFinished(job); });
  std::unique_ptr<prometheus::Exposer> exposer;
  if (!metrics_listen.empty()) {
    try {
      exposer = std::make_unique<prometheus::Exposer>(metrics_listen);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "error: cannot serve metrics on %s: %s\n", metrics_listen.c_str(), e.what());
      return 1;
    }
    exposer->RegisterCollectable(metrics.registry());
  }
  // Before serving: what a crash or an earlier run left behind.
  const int64_t part_max_age_ms = part_expiry_seconds * 1000;
  CollectGarbage(catalog, part_max_age_ms);
  IdleWatchdog watchdog{std::chrono::seconds(upload_idle_seconds)};
  BlobServiceImpl blob_service(blobs->get(), &catalog, &auth, &metrics, &watchdog, limits);
  ModelServiceImpl model_service(&catalog, &auth, &metrics);
  DatasetServiceImpl dataset_service(&catalog, &auth, &metrics);
  JobServiceImpl job_service(jobs->get(), blobs->get(), &catalog, &auth, &metrics, limits);
  WorkerServiceImpl worker_service(jobs->get(), blobs->get(), &catalog, &auth, &metrics, &watchdog, limits);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (tls_cert.empty() != tls_key.empty()) {
    std::fprintf(stderr, "error: --tls-cert and --tls-key go together\n");
    return 2;
  }
  if (!tls_cert.empty()) {
    auto cert = qopt::ReadTextFile(tls_cert);
    auto key = qopt::ReadTextFile(tls_key);
    if (!cert.ok() || !key.ok()) {
      std::fprintf(stderr, "error: %s\n",
                   std::string((cert.ok() ? key.status() : cert.status()).message()).c_str());
      return 2;
    }
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({*key, *cert});
    credentials = grpc::SslServerCredentials(ssl);
  }
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, credentials, &port);
  builder.SetMaxReceiveMessageSize(2 << 20);
  builder.RegisterService(&blob_service);
  builder.RegisterService(&model_service);
  builder.RegisterService(&dataset_service);
  builder.RegisterService(&job_service);
  builder.RegisterService(&worker_service);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(MalformedRequestInterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    std::fprintf(stderr, "error: cannot listen on %s\n", listen.c_str());
    return 1;
  }
  // With port 0 the system picks one; say which, so scripts can connect.
  const std::string address = listen.substr(0, listen.rfind(':') + 1) + std::to_string(port);
  std::printf("qopt-server listening on %s, data in %s\n", address.c_str(), data_dir.c_str());
  if (exposer) {
    const auto ports = exposer->GetListeningPorts();
    std::printf("qopt-server metrics on %s:%d/metrics\n",
                metrics_listen.substr(0, metrics_listen.rfind(':')).c_str(), ports.empty() ? 0 : ports[0]);
  }
  std::fflush(stdout);

  signal(SIGINT, OnSignal);
  signal(SIGTERM, OnSignal);
  std::vector<pid_t> workers(local_workers, -1);
  // Often enough that a partial upload outlives its expiry by at most half of it.
  const auto gc_period = std::min<std::chrono::milliseconds>(std::chrono::minutes(1),
                                                             std::chrono::milliseconds(part_max_age_ms / 2));
  auto last_gc = std::chrono::steady_clock::now();
  while (!g_stop) {
    if (auto expired = (*jobs)->ExpireLeases(); !expired.ok()) {
      std::fprintf(stderr, "lease expiry: %s\n", std::string(expired.status().message()).c_str());
    } else {
      metrics.LeaseExpired(*expired);
    }
    if (auto stopped = (*jobs)->EnforceTimeLimits(); !stopped.ok()) {
      std::fprintf(stderr, "time limits: %s\n", std::string(stopped.status().message()).c_str());
    }
    if (std::chrono::steady_clock::now() - last_gc > gc_period) {
      CollectGarbage(catalog, part_max_age_ms);
      last_gc = std::chrono::steady_clock::now();
    }
    if (auto counts = (*jobs)->CountByState(); counts.ok()) metrics.SetJobCounts(*counts);
    if (auto counts = (*jobs)->CountByTechnique(); counts.ok()) {
      std::vector<std::tuple<qopt::v1::JobState, std::string, int64_t>> triples;
      for (const auto& c : *counts) triples.emplace_back(c.state, c.technique, c.count);
      metrics.SetTechniqueCounts(triples);
    }
    metrics.UpdateLiveWorkers();
    // Local workers that exit are started again.
    for (int i = 0; i < local_workers; ++i) {
      if (workers[i] > 0 && waitpid(workers[i], nullptr, WNOHANG) == 0) continue;
      workers[i] = StartWorker(worker_binary, address, i, auth.AnyWorkerToken(), tls_cert);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  for (pid_t pid : workers) {
    if (pid > 0) kill(pid, SIGTERM);
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  for (pid_t pid : workers) {
    if (pid > 0) waitpid(pid, nullptr, 0);
  }
  return 0;
}
