// qopt-server: the job service. Stores jobs in SQLite (WAL) and blobs as content-addressed
// files under --data-dir, leases jobs to workers, and optionally runs local workers.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

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

#include "api/services.h"
#include "file_text.h"

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

}  // namespace

int main(int argc, char** argv) {
  using namespace qopt::server;
  CLI::App app{"qopt-server: the qopt job service"};
  std::string listen = "127.0.0.1:50051", data_dir, auth_file, metrics_listen, tls_cert, tls_key,
              worker_binary = DefaultWorkerBinary();
  int local_workers = 0;
  JobStore::Options store_options;
  Catalog::Options catalog_options;
  ServerLimits limits;
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
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
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
  BlobServiceImpl blob_service(blobs->get(), &catalog, &auth, &metrics, limits);
  ModelServiceImpl model_service(&catalog, &auth, &metrics);
  DatasetServiceImpl dataset_service(&catalog, &auth, &metrics);
  JobServiceImpl job_service(jobs->get(), blobs->get(), &catalog, &auth, &metrics);
  WorkerServiceImpl worker_service(jobs->get(), blobs->get(), &auth, &metrics, limits);
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
  while (!g_stop) {
    if (auto expired = (*jobs)->ExpireLeases(); !expired.ok()) {
      std::fprintf(stderr, "lease expiry: %s\n", std::string(expired.status().message()).c_str());
    } else {
      metrics.LeaseExpired(*expired);
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
