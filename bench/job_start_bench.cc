// What running a service job in its own sandboxed process costs (issue 11: goal < 100 ms
// per job), measured on one small job:
//
//   job_start_bench QOPT_WORKER MODEL.pt [--runs 15]
//
// The job loads MODEL.pt and folds its batch norms (no export), three ways, interleaved
// round by round so that the machine's noise falls on all of them alike:
//   in-process  RunRecipe in this process (no sandbox): the job's own cost;
//   exec        RunJobProcess with a child that is an exec of QOPT_WORKER (`job`);
//   zygote      RunJobProcess with a child forked from a zygote of QOPT_WORKER.
// For each: the median wall time of the whole job, and of the time until its first progress
// frame (the process started, sandboxed, and reading its recipe). A job's overhead is its
// median minus in-process's. The zygote's own start (once per worker) is timed too.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <sys/stat.h>
#include <vector>

#include "bench_util.h"
#include "recipe/runner.h"
#include "sandbox/job_process.h"
#include "sandbox/zygote.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using qopt::bench::Check;
using qopt::bench::Median;

double Ms(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

struct Timing {
  std::vector<double> total_ms, first_frame_ms;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: job_start_bench QOPT_WORKER MODEL.pt [--runs N]\n");
    return 2;
  }
  const std::string worker = fs::absolute(argv[1]).string(), model = fs::absolute(argv[2]).string();
  int runs = 15;
  for (int i = 3; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "--runs") runs = std::stoi(argv[++i]);
  }
  qopt::v1::Recipe recipe;
  recipe.set_name("job-start");
  recipe.mutable_model()->set_path(model);
  recipe.add_steps()->mutable_fold_batch_norm();

  // Reachable by uid 65534, which the child becomes when this runs as root.
  char tmpl[] = "/tmp/qopt-job-start-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return 1;
  const fs::path root = tmpl;
  chmod(root.c_str(), 0755);

  const auto zygote_t0 = Clock::now();
  std::unique_ptr<qopt::sandbox::Zygote> zygote = Check(qopt::sandbox::Zygote::Start(worker));
  const double zygote_ms = Ms(zygote_t0, Clock::now());

  const char* names[] = {"in-process", "exec", "zygote"};
  Timing timing[3];
  // Round 0 warms every path up (page cache, LibTorch's thread pools) and is not counted.
  for (int round = 0; round <= runs; ++round) {
    for (int mode = 0; mode < 3; ++mode) {
      const fs::path job_dir = root / std::to_string(round * 3 + mode);
      fs::create_directories(job_dir);
      const auto t0 = Clock::now();
      Clock::time_point first{};
      qopt::RunOptions run;
      run.on_progress = [&](const qopt::Progress&) {
        if (first == Clock::time_point{}) first = Clock::now();
      };
      if (mode == 0) {
        run.out_dir = (job_dir / "out").string();
        Check(qopt::RunRecipe(recipe, run).status());
      } else {
        qopt::sandbox::JobProcessOptions o;
        o.job_dir = job_dir.string();
        o.limits.job_dir = job_dir.string();
        o.program = worker;
        if (mode == 2) o.zygote = zygote.get();
        Check(qopt::sandbox::RunJobProcess(recipe, run, o).status());
      }
      const auto t1 = Clock::now();
      if (round > 0) {
        timing[mode].total_ms.push_back(Ms(t0, t1));
        timing[mode].first_frame_ms.push_back(Ms(t0, first));
      }
      fs::remove_all(job_dir);
    }
  }
  fs::remove_all(root);

  std::printf("job: load %s, fold_batch_norm; %d runs each, interleaved; %ld cores\n", model.c_str(), runs,
              sysconf(_SC_NPROCESSORS_ONLN));
  std::printf("zygote start (once per worker): %.1f ms\n\n", zygote_ms);
  std::printf("| mode | job median (ms) | overhead vs in-process (ms) | first progress frame median (ms) |\n");
  std::printf("|---|---:|---:|---:|\n");
  const double base = Median(timing[0].total_ms);
  for (int mode = 0; mode < 3; ++mode) {
    const double total = Median(timing[mode].total_ms);
    std::printf("| %s | %.1f | %+.1f | %.1f |\n", names[mode], total, total - base,
                Median(timing[mode].first_frame_ms));
  }
  return 0;
}
