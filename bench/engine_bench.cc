// Engine speed, measured side by side in one process so machine noise hits every
// variant alike: runs are interleaved (A, B, C, D, A, B, ...) and medians compared.
//
//   engine_bench MODEL.pt [--batch 16] [--size 224] [--runs 7] [--threads N]
//
// Ratios printed (lower is better):
//   engine FP32 / Module::forward          (goal <= 1.05)
//   W8A8 simulated / engine FP32 (folded)  (goal <= 1.3)
//   one SQNR calibration batch / FP32      (goal <= 2)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/script.h>

#include "bench_util.h"
#include "ir/import.h"
#include "ir/interpreter.h"
#include "passes/batch_norm_fold.h"
#include "quant/quantsim.h"

namespace {

using qopt::bench::Check;
using qopt::bench::Median;

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: engine_bench MODEL.pt [--batch N] [--size S] [--runs R] [--threads T]\n");
    return 2;
  }
  const std::string path = argv[1];
  int batch = 16, size = 224, runs = 7;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const int value = std::stoi(argv[i + 1]);
    if (flag == "--batch") batch = value;
    else if (flag == "--size") size = value;
    else if (flag == "--runs") runs = value;
    else if (flag == "--threads") threads = value;
  }
  at::set_num_threads(threads);
  at::NoGradGuard no_grad;
  at::manual_seed(0);
  const at::Tensor x = at::randn({batch, 3, size, size});

  torch::jit::Module module = torch::jit::load(path);
  module.eval();
  qopt::Graph graph = Check(qopt::ImportTorchScript(path));
  qopt::Interpreter engine(graph);
  qopt::Graph folded = Check(qopt::ImportTorchScript(path));
  Check(qopt::FoldBatchNorms(folded).status());
  qopt::Interpreter engine_folded(folded);

  qopt::QuantSimOptions w8a8;
  w8a8.per_channel = true;
  w8a8.activation_method = qopt::CalibrationMethod::kSqnr;
  auto sim = Check(qopt::QuantSim::Create(folded, w8a8));
  Check(sim->ObserveBatch({x}));
  Check(sim->FinishCalibration());

  struct Variant {
    const char* name;
    std::function<void()> fn;
    std::vector<double> seconds;
  };
  std::vector<Variant> variants = {
      {"Module::forward", [&] { module.forward({x}); }, {}},
      {"engine FP32", [&] { Check(engine.Forward(x).status()); }, {}},
      {"engine FP32 (BN folded)", [&] { Check(engine_folded.Forward(x).status()); }, {}},
      {"W8A8 simulated", [&] { Check(sim->Forward(x).status()); }, {}},
      {"SQNR calibration batch", [&] { Check(sim->ObserveBatch({x})); }, {}},
  };
  for (auto& v : variants) v.fn();  // warm-up (allocator, oneDNN primitive caches)
  for (int r = 0; r < runs; ++r) {
    for (auto& v : variants) {
      const auto t0 = std::chrono::steady_clock::now();
      v.fn();
      v.seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  }
  std::printf("model %s, batch %d, 3x%dx%d, %d threads, median of %d interleaved runs\n",
              path.c_str(), batch, size, size, threads, runs);
  for (const auto& v : variants) {
    std::printf("  %-26s %8.1f ms\n", v.name, 1e3 * Median(v.seconds));
  }
  const double module_fwd = Median(variants[0].seconds), fp32 = Median(variants[1].seconds),
               folded_fp32 = Median(variants[2].seconds), w8 = Median(variants[3].seconds),
               calib = Median(variants[4].seconds);
  std::printf("ratios\n");
  std::printf("  engine FP32 / Module::forward           %.3f  (goal <= 1.05)\n", fp32 / module_fwd);
  std::printf("  W8A8 simulated / engine FP32 (folded)   %.3f  (goal <= 1.3)\n", w8 / folded_fp32);
  std::printf("  W8A8 simulated / Module::forward        %.3f\n", w8 / module_fwd);
  std::printf("  SQNR calibration batch / FP32 (folded)  %.3f  (goal <= 2)\n", calib / folded_fp32);
  return 0;
}
