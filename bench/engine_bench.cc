// Engine speed, measured side by side in one process so machine noise hits every
// variant alike: runs are interleaved (A, B, C, D, A, B, ...) and medians compared.
//
//   engine_bench MODEL.pt [--batch 16] [--size 224] [--runs 7] [--threads N]
//                [--profile OUT.md] [--json OUT.json] [--histogram-kernel avx2]
//
// Ratios printed (lower is better):
//   engine FP32 / Module::forward          (goal <= 1.05)
//   W8A8 simulated / engine FP32 (folded)  (goal <= 1.05: one elementwise pass per quantizer)
//   one SQNR calibration batch / FP32      (goal <= 1.2: one histogram update per activation)
//
// Each variant's CPU time over its wall time is printed beside it (the cores it kept busy).
//
// Then each histogram kernel this CPU runs (scalar, SSE2, AVX2, AVX-512) is timed on the
// model's ReLU and clip outputs, the tensors calibration bins most, counting alone and with
// the clip in the same pass, and checked to count as the scalar loop does.
// --histogram-kernel makes calibration use that kernel instead of the fastest (how a CPU
// without AVX-512 calibrates).
//
// --profile runs each engine variant `runs` more times with per-op timing and writes where
// the time goes as a Markdown table; --json writes the medians and ratios as one JSON
// object (bench/run_engine_bench.sh puts it in bench/results/speed.json).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/script.h>

#include "bench_util.h"
#include "ir/import.h"
#include "ir/interpreter.h"
#include "passes/batch_norm_fold.h"
#include "quant/encoding_analyzer.h"
#include "quant/quantsim.h"
#include "recipe/process_memory.h"

namespace {

using qopt::bench::Check;
using qopt::bench::Median;

double ProcessCpuSeconds() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// One profiled variant: milliseconds per run, per op.
struct Profiled {
  std::string name;
  qopt::RunProfile profile;
};

// The outputs of the model's ReLUs and clips, the activations whose histograms take most
// of a calibration batch, from one FP32 run.
class RectifierOutputs : public qopt::ValueObserver {
 public:
  explicit RectifierOutputs(const qopt::Graph& graph) : graph_(graph) {}
  void OnValue(const qopt::Value& value, c10::IValue& v) override {
    if (value.producer < 0 || !v.isTensor()) return;
    const qopt::OpKind kind = graph_.nodes[value.producer].kind;
    if (kind == qopt::OpKind::kRelu || kind == qopt::OpKind::kClip) tensors.push_back(v.toTensor().contiguous());
  }
  bool RetainsValues() const override { return true; }
  std::vector<at::Tensor> tensors;

 private:
  const qopt::Graph& graph_;
};

// Each histogram kernel this CPU runs, timed on `tensors` (each binned over its own
// range, as calibration's first pass does), runs interleaved: counting alone, and a clip
// with its histogram in one pass (ClampAndCountBinsWith, clipping each tensor to its own
// range, which leaves it as it is). Every kernel must give the scalar loop's counts both
// ways. Milliseconds per pass over all of them, medians, by kernel name.
struct KernelTimes {
  std::string name;
  double count_seconds, clip_and_count_seconds;
};

std::vector<KernelTimes> TimeHistogramKernels(const std::vector<at::Tensor>& tensors, int runs) {
  using qopt::internal_histogram::ClampAndCountBinsWith;
  using qopt::internal_histogram::CountBinsWith;
  using qopt::internal_histogram::Kernel;
  const std::vector<Kernel> kernels = qopt::internal_histogram::SupportedKernels();
  constexpr int kBins = qopt::Histogram::kBins;
  std::vector<std::pair<float, float>> ranges;
  for (const at::Tensor& t : tensors) {
    const float lo = t.min().item<float>();
    ranges.emplace_back(lo, std::max(t.max().item<float>(), lo + 1e-6f));
  }
  std::vector<std::vector<double>> seconds(kernels.size()), clip_seconds(kernels.size()), first;
  for (int r = 0; r < runs; ++r) {
    for (size_t k = 0; k < kernels.size(); ++k) {
      for (const bool clip : {false, true}) {
        std::vector<std::vector<double>> counts(tensors.size(), std::vector<double>(kBins, 0.0));
        bool counted = true;
        const auto t0 = std::chrono::steady_clock::now();
        for (size_t i = 0; i < tensors.size(); ++i) {
          const auto [lo, hi] = ranges[i];
          float* values = tensors[i].data_ptr<float>();
          const int64_t n = tensors[i].numel();
          counted &= clip ? ClampAndCountBinsWith(kernels[k], values, n, lo, hi, lo, hi, kBins, counts[i].data())
                          : CountBinsWith(kernels[k], values, n, lo, hi, kBins, counts[i].data());
        }
        (clip ? clip_seconds : seconds)[k].push_back(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        if (first.empty()) first = counts;
        if (!counted || counts != first) {
          std::fprintf(stderr, "error: the %s histogram kernel%s %s\n",
                       std::string(qopt::internal_histogram::KernelName(kernels[k])).c_str(),
                       clip ? " (with the clip)" : "",
                       counted ? "counts differently from the scalar loop" : "refused values within their range");
          std::exit(1);
        }
      }
    }
  }
  std::vector<KernelTimes> out;
  for (size_t k = 0; k < kernels.size(); ++k) {
    out.push_back({std::string(qopt::internal_histogram::KernelName(kernels[k])), Median(seconds[k]),
                   Median(clip_seconds[k])});
  }
  return out;
}

// Where the time of each variant goes, one row per op, heaviest first in FP32.
std::string ProfileTable(const std::string& model, const std::vector<Profiled>& variants) {
  auto per_run = [](const qopt::RunProfile& p, double seconds) { return 1e3 * seconds / std::max(1, p.runs); };
  std::map<std::string, double> order;
  for (const auto& [op, t] : variants[0].profile.by_op) order[op] = t.op_seconds;
  for (const auto& v : variants) {
    for (const auto& [op, t] : v.profile.by_op) order.emplace(op, 0.0);
  }
  std::vector<std::pair<double, std::string>> ops;
  for (const auto& [op, seconds] : order) ops.emplace_back(-seconds, op);
  std::sort(ops.begin(), ops.end());

  std::string out = "| op | nodes |";
  std::string rule = "|---|---:|";
  for (const auto& v : variants) {
    out += " " + v.name + ": op | " + v.name + ": observer |";
    rule += "---:|---:|";
  }
  out += "\n" + rule + "\n";
  std::vector<double> op_total(variants.size(), 0.0), obs_total(variants.size(), 0.0);
  char cell[64];
  for (const auto& [_, op] : ops) {
    const auto& first = variants[0].profile.by_op;
    const int64_t calls = first.count(op) ? first.at(op).calls / std::max(1, variants[0].profile.runs) : 0;
    out += "| `" + op + "` | " + std::to_string(calls) + " |";
    for (size_t k = 0; k < variants.size(); ++k) {
      const auto& by_op = variants[k].profile.by_op;
      const auto it = by_op.find(op);
      const double o = it == by_op.end() ? 0.0 : per_run(variants[k].profile, it->second.op_seconds);
      const double q = it == by_op.end() ? 0.0 : per_run(variants[k].profile, it->second.observer_seconds);
      op_total[k] += o;
      obs_total[k] += q;
      std::snprintf(cell, sizeof(cell), " %.1f | %.1f |", o, q);
      out += cell;
    }
    out += "\n";
  }
  out += "| setup (parameters, inputs) | |";
  for (const auto& v : variants) {
    std::snprintf(cell, sizeof(cell), " %.1f | |", per_run(v.profile, v.profile.setup_seconds));
    out += cell;
  }
  out += "\n| **total** | |";
  for (size_t k = 0; k < variants.size(); ++k) {
    const double setup = per_run(variants[k].profile, variants[k].profile.setup_seconds);
    std::snprintf(cell, sizeof(cell), " **%.1f** | **%.1f** |", op_total[k] + setup, obs_total[k]);
    out += cell;
  }
  return "Per-op time of " + model + ", milliseconds per run (observer: the quantizers, or the " +
         "calibration statistics, on the op's outputs)\n\n" + out + "\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: engine_bench MODEL.pt [--batch N] [--size S] [--runs R] [--threads T]\n"
                 "                    [--profile OUT.md] [--json OUT.json] [--histogram-kernel NAME]\n");
    return 2;
  }
  const std::string path = argv[1];
  int batch = 16, size = 224, runs = 7;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int threads = cores;
  std::string profile_path, json_path, histogram_kernel;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--batch") batch = std::stoi(value);
    else if (flag == "--size") size = std::stoi(value);
    else if (flag == "--runs") runs = std::stoi(value);
    else if (flag == "--threads") threads = std::stoi(value);
    else if (flag == "--profile") profile_path = value;
    else if (flag == "--json") json_path = value;
    else if (flag == "--histogram-kernel") histogram_kernel = value;
    else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if (!histogram_kernel.empty()) {
    std::string names;
    for (const auto kernel : qopt::internal_histogram::SupportedKernels()) {
      const std::string name(qopt::internal_histogram::KernelName(kernel));
      if (name == histogram_kernel) qopt::internal_histogram::UseKernel(kernel);
      names += " " + name;
    }
    if (qopt::internal_histogram::KernelName(qopt::internal_histogram::CurrentKernel()) != histogram_kernel) {
      std::fprintf(stderr, "--histogram-kernel %s: this CPU runs%s\n", histogram_kernel.c_str(), names.c_str());
      return 2;
    }
  }
  qopt::KeepFreedMemory();  // as a job does
  at::set_num_threads(threads);
  at::NoGradGuard no_grad;
  at::manual_seed(0);
  const at::Tensor x = at::randn({batch, 3, size, size});
  // Calibration sees a new batch each time, as it does over a data set: a batch beyond
  // the range seen so far costs the histogram a second pass.
  std::vector<at::Tensor> calibration_batches;
  for (int i = 0; i < 8; ++i) calibration_batches.push_back(at::randn({batch, 3, size, size}));
  size_t next_batch = 0;
  auto next_calibration_batch = [&] { return calibration_batches[next_batch++ % calibration_batches.size()]; };

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
    std::vector<double> cpu_seconds;  // the process's, all threads together
  };
  // Cores kept busy on average. OpenMP's workers spin while they wait for work, and that
  // counts as busy: a core left idle by a serial stretch shows only beyond the spin time.
  const auto CpuOverWall = [](const Variant& v) { return Median(v.cpu_seconds) / Median(v.seconds); };
  std::vector<Variant> variants = {
      {"Module::forward", [&] { module.forward({x}); }, {}},
      {"engine FP32", [&] { Check(engine.Forward(x).status()); }, {}},
      {"engine FP32 (BN folded)", [&] { Check(engine_folded.Forward(x).status()); }, {}},
      {"W8A8 simulated", [&] { Check(sim->Forward(x).status()); }, {}},
      {"SQNR calibration batch", [&] { Check(sim->ObserveBatch({next_calibration_batch()})); }, {}},
  };
  for (auto& v : variants) v.fn();  // warm-up (allocator, oneDNN primitive caches)
  for (int r = 0; r < runs; ++r) {
    for (auto& v : variants) {
      const double c0 = ProcessCpuSeconds();
      const auto t0 = std::chrono::steady_clock::now();
      v.fn();
      v.seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      v.cpu_seconds.push_back(ProcessCpuSeconds() - c0);
    }
  }
  const std::string calibration_kernel(qopt::internal_histogram::KernelName(qopt::internal_histogram::CurrentKernel()));
  std::printf("model %s, batch %d, 3x%dx%d, %d threads, median of %d interleaved runs, %s histogram kernel\n",
              path.c_str(), batch, size, size, threads, runs, calibration_kernel.c_str());
  for (const auto& v : variants) {
    std::printf("  %-26s %8.1f ms  CPU / wall %.2f\n", v.name, 1e3 * Median(v.seconds), CpuOverWall(v));
  }
  const double module_fwd = Median(variants[0].seconds), fp32 = Median(variants[1].seconds),
               folded_fp32 = Median(variants[2].seconds), w8 = Median(variants[3].seconds),
               calib = Median(variants[4].seconds);
  std::printf("ratios\n");
  std::printf("  engine FP32 / Module::forward           %.3f  (goal <= 1.05)\n", fp32 / module_fwd);
  std::printf("  W8A8 simulated / engine FP32 (folded)   %.3f  (goal <= 1.05)\n", w8 / folded_fp32);
  std::printf("  W8A8 simulated / Module::forward        %.3f\n", w8 / module_fwd);
  std::printf("  SQNR calibration batch / FP32 (folded)  %.3f  (goal <= 1.2)\n", calib / folded_fp32);
  // Each run's own ratio, then their median: a slow spell of the machine that spans a run
  // slows both sides of its ratio alike, where it shifts one median and not the other.
  const auto median_ratio = [&](const Variant& over, const Variant& base) {
    std::vector<double> ratios;
    for (size_t r = 0; r < over.seconds.size(); ++r) ratios.push_back(over.seconds[r] / base.seconds[r]);
    return Median(ratios);
  };
  const double w8_paired = median_ratio(variants[3], variants[2]), calib_paired = median_ratio(variants[4], variants[2]);
  std::printf("  the same, median of each run's own ratio: simulated %.3f, calibration %.3f\n", w8_paired,
              calib_paired);

  RectifierOutputs rectifiers(folded);
  Check(engine_folded.Run({x}, &rectifiers).status());
  int64_t rectifier_values = 0;
  for (const at::Tensor& t : rectifiers.tensors) rectifier_values += t.numel();
  const auto kernel_ms = TimeHistogramKernels(rectifiers.tensors, runs);
  std::printf("histogram kernels over the %zu ReLU / clip outputs (%.1f M values), %d threads\n",
              rectifiers.tensors.size(), 1e-6 * static_cast<double>(rectifier_values), threads);
  std::printf("  %-8s %10s %18s %20s\n", "kernel", "count", "ns per value", "clip + count (fused)");
  for (const KernelTimes& k : kernel_ms) {
    std::printf("  %-8s %7.2f ms %10.3f (x%5.2f) %11.2f ms\n", k.name.c_str(), 1e3 * k.count_seconds,
                1e9 * k.count_seconds / static_cast<double>(rectifier_values),
                kernel_ms.front().count_seconds / k.count_seconds, 1e3 * k.clip_and_count_seconds);
  }
  rectifiers.tensors.clear();

  std::string model = path.substr(path.find_last_of('/') + 1);
  model = model.substr(0, model.rfind(".pt"));
  if (!json_path.empty()) {
    std::ofstream json(json_path);
    char row[1024];
    std::snprintf(row, sizeof(row),
                  "{\"benchmark\": \"engine\", \"model\": \"%s\", \"batch\": %d, \"size\": %d, "
                  "\"threads\": %d, \"cores\": %d, \"runs\": %d, \"module_forward_ms\": %.1f, "
                  "\"engine_fp32_ms\": %.1f, \"engine_fp32_folded_ms\": %.1f, \"w8a8_simulated_ms\": %.1f, "
                  "\"sqnr_calibration_batch_ms\": %.1f, \"engine_fp32_over_module\": %.3f, "
                  "\"w8a8_simulated_over_fp32\": %.3f, \"sqnr_calibration_over_fp32\": %.3f, "
                  "\"w8a8_simulated_over_fp32_per_run_median\": %.3f, "
                  "\"sqnr_calibration_over_fp32_per_run_median\": %.3f, "
                  "\"fp32_folded_cpu_over_wall\": %.2f, \"sqnr_calibration_cpu_over_wall\": %.2f}\n",
                  model.c_str(), batch, size, threads, cores, runs, 1e3 * module_fwd, 1e3 * fp32,
                  1e3 * folded_fp32, 1e3 * w8, 1e3 * calib, fp32 / module_fwd, w8 / folded_fp32,
                  calib / folded_fp32, w8_paired, calib_paired, CpuOverWall(variants[2]),
                  CpuOverWall(variants[4]));
    std::string line = row;
    std::string kernels = ", \"histogram_kernel\": \"" + calibration_kernel + "\"";
    for (const bool clip : {false, true}) {
      kernels += clip ? "}, \"histogram_clip_kernel_ms\": {" : ", \"histogram_kernel_ms\": {";
      for (size_t k = 0; k < kernel_ms.size(); ++k) {
        char entry[64];
        std::snprintf(entry, sizeof(entry), "%s\"%s\": %.2f", k ? ", " : "", kernel_ms[k].name.c_str(),
                      1e3 * (clip ? kernel_ms[k].clip_and_count_seconds : kernel_ms[k].count_seconds));
        kernels += entry;
      }
    }
    line.insert(line.rfind('}'), kernels + "}");
    json << line;
    if (!json) {
      std::fprintf(stderr, "error: cannot write %s\n", json_path.c_str());
      return 1;
    }
  }
  if (!profile_path.empty()) {
    std::vector<Profiled> profiled = {{"FP32 (folded)", {}}, {"W8A8 simulated", {}}, {"SQNR calibration", {}}};
    for (int r = 0; r < runs; ++r) {
      Check(engine_folded.Run({x}, nullptr, &profiled[0].profile).status());
      sim->set_profile(&profiled[1].profile);
      Check(sim->Forward(x).status());
      sim->set_profile(&profiled[2].profile);
      Check(sim->ObserveBatch({next_calibration_batch()}));
      sim->set_profile(nullptr);
    }
    std::ofstream md(profile_path);
    md << ProfileTable(model, profiled);
    if (!md) {
      std::fprintf(stderr, "error: cannot write %s\n", profile_path.c_str());
      return 1;
    }
  }
  return 0;
}
