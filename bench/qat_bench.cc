// QAT training speed, side by side in one process: one training step (forward, loss,
// backward, optimizer step) of the folded model in floating point, and of the simulated
// model with each range-learning mode, all through qopt's trainer. Variants are
// interleaved round by round and medians compared, so machine noise hits each alike.
//
//   qat_bench MODEL.pt [--batch 128] [--size 28] [--channels 1] [--bits 4] [--steps 8]
//                      [--rounds 5] [--threads N] [--profile VARIANT]
//
// --profile runs only VARIANT under LibTorch's profiler and prints its ops by total
// time per step (nested ops count in their callers too).
// Prints one JSON line per variant: {"variant", "ms_per_step", "images_per_second",
// "ratio_to_fp32"}. Goal: QAT / FP32 <= 1.5.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>
#include <sstream>
#include <torch/csrc/autograd/profiler_legacy.h>

#include "bench_util.h"
#include "ir/import.h"
#include "passes/batch_norm_fold.h"
#include "quant/quantsim.h"
#include "recipe/process_memory.h"
#include "train/qat.h"
#include "train/trainer.h"

namespace {

using qopt::bench::Check;
using qopt::bench::Median;

struct Variant {
  std::string name;
  qopt::Graph graph;
  std::unique_ptr<qopt::QuantSim> sim;
  std::unique_ptr<qopt::QatTask> task;
  std::vector<double> ms;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: qat_bench MODEL.pt [--batch N] [--size S] [--channels C] [--bits B] [--steps K] "
                         "[--rounds R] [--threads T]\n");
    return 2;
  }
  const std::string path = argv[1];
  int batch = 128, size = 28, channels = 1, bits = 4, steps = 8, rounds = 5;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::string profile;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--profile") {
      profile = argv[i + 1];
      continue;
    }
    const int value = std::stoi(argv[i + 1]);
    if (flag == "--batch") batch = value;
    else if (flag == "--size") size = value;
    else if (flag == "--channels") channels = value;
    else if (flag == "--bits") bits = value;
    else if (flag == "--steps") steps = value;
    else if (flag == "--rounds") rounds = value;
    else if (flag == "--threads") threads = value;
  }
  at::set_num_threads(threads);
  qopt::KeepFreedMemory();  // as a job does
  at::manual_seed(0);
  qopt::Dataset data;
  data.inputs = at::randn({static_cast<int64_t>(batch) * (steps + 1), channels, size, size});
  data.labels = at::randint(10, {data.inputs.size(0)}, at::kLong);

  std::vector<std::unique_ptr<Variant>> variants;
  for (const char* name : {"fp32", "qat_off", "qat_aimet", "qat_lsq"}) {
    auto v = std::make_unique<Variant>();
    v->name = name;
    v->graph = Check(qopt::ImportTorchScript(path));
    Check(qopt::FoldBatchNorms(v->graph));
    qopt::QuantSimOptions o;
    o.param_bitwidth = bits;
    o.activation_bitwidth = bits;
    o.per_channel = true;
    v->sim = Check(qopt::QuantSim::Create(v->graph, o));
    {
      at::NoGradGuard no_grad;
      Check(v->sim->ObserveBatch({data.inputs.slice(0, 0, batch)}));
      Check(v->sim->FinishCalibration());
    }
    qopt::QatOptions q;
    const std::string mode = v->name;
    if (mode == "fp32") {
      // The same model and trainer with every quantizer off.
      v->sim->SetActivationQuantization(false);
      std::vector<int> params;
      for (const auto& [vid, quantizer] : v->sim->param_quantizers()) params.push_back(vid);
      for (int vid : params) Check(v->sim->ChangeQuantizer(vid, qopt::QuantizerChange{std::nullopt, std::nullopt, std::nullopt, false}));
    }
    q.range_learning = mode == "qat_aimet" ? qopt::RangeLearning::kAimet
                       : mode == "qat_lsq" ? qopt::RangeLearning::kLsq
                                           : qopt::RangeLearning::kOff;
    v->task = Check(qopt::QatTask::Create(v->graph, *v->sim, q));
    variants.push_back(std::move(v));
  }

  qopt::TrainOptions train;
  train.epochs = 1;
  train.batch_size = batch;
  train.max_steps_per_epoch = steps + 1;  // the first step of each round warms up
  if (!profile.empty()) {
    for (auto& v : variants) {
      if (v->name != profile) continue;
      Check(qopt::Train(*v->task, data, train, {}).status());  // warm-up
      std::stringstream trace;
      {
        torch::autograd::profiler::RecordProfile guard(trace);
        Check(qopt::Train(*v->task, data, train, {}).status());
      }
      std::map<std::string, double> total;
      for (const auto& e : nlohmann::json::parse(trace.str())) {
        if (e.value("ph", "") == "X") total[e.value("name", "?")] += e.value("dur", 0.0) / 1000.0;
      }
      std::vector<std::pair<double, std::string>> rows;
      for (const auto& [name, ms] : total) rows.emplace_back(ms / (steps + 1), name);
      std::sort(rows.rbegin(), rows.rend());
      for (size_t k = 0; k < std::min<size_t>(rows.size(), 30); ++k) {
        std::printf("%10.2f ms/step  %s\n", rows[k].first, rows[k].second.c_str());
      }
    }
    return 0;
  }
  for (int r = 0; r < rounds; ++r) {
    for (auto& v : variants) {
      std::vector<std::chrono::steady_clock::time_point> ticks;
      qopt::TrainCallbacks cb;
      cb.on_iteration = [&](const qopt::TrainProgress&) {
        ticks.push_back(std::chrono::steady_clock::now());
        return absl::OkStatus();
      };
      Check(qopt::Train(*v->task, data, train, cb).status());
      for (size_t k = 1; k < ticks.size(); ++k) {
        v->ms.push_back(std::chrono::duration<double, std::milli>(ticks[k] - ticks[k - 1]).count());
      }
    }
  }
  const double fp32 = Median(variants[0]->ms);
  for (const auto& v : variants) {
    const double ms = Median(v->ms);
    std::printf("{\"variant\": \"%s\", \"ms_per_step\": %.2f, \"images_per_second\": %.1f, \"ratio_to_fp32\": %.3f}\n",
                v->name.c_str(), ms, 1000.0 * batch / ms, ms / fp32);
  }
  return 0;
}
