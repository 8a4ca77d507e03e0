// qopt-worker: runs optimization jobs. `qopt-worker run` executes one recipe from local
// files with no server (notebooks, CI, benchmarks).
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include <CLI/CLI.hpp>

#include "file_text.h"
#include "recipe/recipe.h"
#include "recipe/runner.h"
#include "sandbox/job_process.h"
#if QOPT_WORKER_SERVICE
#include "runtime/lease_loop.h"
#endif

namespace {

int Run(const std::string& model, const std::string& recipe_path, const std::string& data,
        const std::string& out, const std::string& checkpoint, const std::string& device, int threads,
        bool quiet) {
  auto recipe = qopt::LoadRecipeFile(recipe_path);
  if (!recipe.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(recipe.status().message()).c_str());
    return 2;
  }
  if (!model.empty()) recipe->mutable_model()->set_path(model);
  if (!data.empty()) recipe->mutable_calibration_data()->set_path(data);
  if (!device.empty()) recipe->set_device(device);
  if (threads > 0) recipe->set_num_threads(threads);

  qopt::RunOptions options;
  options.out_dir = out;
  options.checkpoint_path = checkpoint;
  if (!checkpoint.empty() && !quiet) {
    options.on_checkpoint = [&checkpoint] {
      std::fprintf(stdout, "checkpoint written to %s\n", checkpoint.c_str());
      std::fflush(stdout);
    };
  }
  options.on_progress = [quiet](const qopt::Progress& p) {
    if (quiet) return;
    std::fprintf(stdout, "[%d/%d] %-16s %3.0f%% %s\n", p.step, p.num_steps, p.stage.c_str(),
                 100.0 * p.fraction, p.message.c_str());
    std::fflush(stdout);
  };
  auto summary = qopt::RunRecipe(*recipe, options);
  if (!summary.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(summary.status().message()).c_str());
    return summary.status().code() == absl::StatusCode::kInvalidArgument ||
                   summary.status().code() == absl::StatusCode::kUnimplemented ||
                   summary.status().code() == absl::StatusCode::kNotFound ||
                   summary.status().code() == absl::StatusCode::kPermissionDenied
               ? 2
               : 1;
  }
  for (const auto& [name, value] : summary->metrics) {
    std::fprintf(stdout, "%s: %.4f\n", name.c_str(), value);
  }
  for (const auto& file : summary->artifacts) std::fprintf(stdout, "wrote %s/%s\n", out.c_str(), file.c_str());
  return 0;
}

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qopt-worker: quantization and compression jobs for TorchScript models.\n"
                "Either `qopt-worker run ...` (offline, one recipe) or "
                "`qopt-worker --server HOST:PORT` (serve jobs from qopt-server)."};
  std::string server, worker_id, cache_dir, tls_ca, service_device = "cpu";
  qopt::sandbox::SandboxOptions service_limits;
  app.add_option("--server", server, "qopt-server to lease jobs from (token: QOPT_TOKEN)");
  app.add_option("--worker-id", worker_id, "Name shown in job events (default: host-pid)");
  app.add_option("--cache-dir", cache_dir, "Blob cache (default: $TMPDIR/qopt-worker-cache)");
  app.add_option("--device", service_device, "cpu or cuda:N for leased jobs");
  app.add_option("--tls-ca", tls_ca, "PEM certificate to trust: connect with TLS")
      ->envname("QOPT_TLS_CA");

  std::string model, recipe, data, out, checkpoint, device;
  int threads = 0;
  bool quiet = false;
  CLI::App* run = app.add_subcommand("run", "Run one recipe on local files, without a server");
  app.require_subcommand(0, 1);
  run->add_option("--recipe", recipe, "Recipe (job spec) JSON file")->required();
  run->add_option("--model", model, "TorchScript model; overrides the recipe's model.path");
  run->add_option("--data", data,
                  "Calibration data (.npy float32 or torch.save tensor); overrides the recipe");
  run->add_option("--out", out, "Directory for the artifacts")->required();
  run->add_option("--checkpoint", checkpoint,
                  "File where training steps (qat, fine_tune) keep their latest epoch checkpoint; a run that finds "
                  "one of the same recipe there resumes from it");
  run->add_option("--device", device, "cpu or cuda:N; overrides the recipe");
  run->add_option("--threads", threads, "LibTorch threads (default: all cores)");
  run->add_flag("--quiet", quiet, "No progress lines");

  // The worker's own child for one service job (sandbox/job_process.h); not for people.
  qopt::sandbox::SandboxOptions job_limits;
  CLI::App* job = app.add_subcommand("job", "")->group("");
  job->add_option("--job-dir", job_limits.job_dir)->required();
  job->add_option("--memory-mb", job_limits.memory_mb);
  job->add_option("--cpu-seconds", job_limits.cpu_seconds);
  bool keep_uid = false;
  job->add_flag("--keep-uid", keep_uid);
  // The worker's zygote, which forks each job's child (sandbox/zygote.h); not for people.
  CLI::App* zygote = app.add_subcommand("zygote", "")->group("");

  app.add_option("--job-memory-mb", service_limits.memory_mb,
                 "Address-space limit of each job's process, MiB (0: none)");
  app.add_option("--job-cpu-seconds", service_limits.cpu_seconds, "CPU-time limit of each job's process (0: none)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (run->parsed()) return Run(model, recipe, data, out, checkpoint, device, threads, quiet);
  if (job->parsed()) {
    job_limits.drop_root = !keep_uid;
    return qopt::sandbox::RunJobChild(job_limits);
  }
  if (zygote->parsed()) return qopt::sandbox::RunZygote();
  if (server.empty()) {
    std::fprintf(stderr, "error: give `run ...` or --server HOST:PORT (see --help)\n");
    return 2;
  }
#if QOPT_WORKER_SERVICE
  // A worker that cannot run on its device would lease jobs only to fail each one.
  if (absl::Status s = qopt::CheckDeviceAvailable(service_device); !s.ok()) {
    std::fprintf(stderr, "error: --device %s: %s\n", service_device.c_str(), std::string(s.message()).c_str());
    return 2;
  }
  char host[256] = "worker";
  gethostname(host, sizeof(host) - 1);
  qopt::worker::LeaseLoopOptions options;
  options.server = server;
  options.token = std::getenv("QOPT_TOKEN") ? std::getenv("QOPT_TOKEN") : "";
  options.worker_id = worker_id.empty() ? std::string(host) + "-" + std::to_string(getpid()) : worker_id;
  options.device = service_device;
  if (!tls_ca.empty()) {
    auto pem = qopt::ReadTextFile(tls_ca);
    if (!pem.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(pem.status().message()).c_str());
      return 2;
    }
    options.tls_ca_pem = *pem;
  }
  // The worker holds its token in its environment and memory: not dumpable, its
  // /proc/<pid>/environ and /proc/<pid>/mem are closed to other processes of its uid
  // (a job child that keeps the worker's uid among them).
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  const std::string tmp = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp";
  options.cache_dir = cache_dir.empty() ? tmp + "/qopt-worker-cache" : cache_dir;
  options.work_dir = tmp + "/qopt-worker-" + std::to_string(getpid());
  options.job_limits = service_limits;
  signal(SIGINT, OnSignal);
  signal(SIGTERM, OnSignal);
  return qopt::worker::RunLeaseLoop(options, g_stop);
#else
  std::fprintf(stderr, "error: this qopt-worker was built without gRPC (QOPT_WITH_GRPC=OFF)\n");
  return 2;
#endif
}
