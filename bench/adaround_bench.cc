// AdaRound speed on the zoo ResNet18 (W4A8 per-channel, Fashion-MNIST calibration images):
//
//   adaround_bench ZOO_RESNET18.pt FASHION_MNIST_TRAIN_IDX [--iterations 200] [--samples 512]
//                  [--threads N] [--full] [--all-iterations] [--schedule N] [--whole-only]
//                  [--param-bits 4]
//
// Per layer, side by side in one process: the time of `iterations` AdaRound iterations
// against the time of the same number of plain forward + backward passes of that layer
// (autograd, weight gradient, same batch size), interleaved A, B, A, B and compared by
// median (goal: ratio <= 1.5). With --full, also the wall time of AdaRound over the whole
// model at default settings (AIMET's iteration counts; goal < 10 min on 2 cores).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include "bench_util.h"
#include "data/dataset.h"
#include "ir/import.h"
#include "passes/batch_norm_fold.h"
#include "quant/quantsim.h"
#include "techniques/adaround.h"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

using qopt::bench::Check;
using qopt::bench::Median;

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr,
                 "usage: adaround_bench ZOO_RESNET18.pt TRAIN_IMAGES_IDX [--iterations N] [--samples N] "
                 "[--threads N] [--full]\n");
    return 2;
  }
  int iterations = 200, samples = 512, threads = static_cast<int>(std::thread::hardware_concurrency());
  bool full = false, per_layer = true;
  int param_bits = 4;
  qopt::AdaRoundOptions whole;  // --full's settings
  std::string only_layer;
  for (int i = 3; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--full") full = true;
    else if (i + 1 < argc && flag == "--iterations") iterations = std::stoi(argv[++i]);
    else if (i + 1 < argc && flag == "--samples") samples = std::stoi(argv[++i]);
    else if (i + 1 < argc && flag == "--threads") threads = std::stoi(argv[++i]);
    else if (i + 1 < argc && flag == "--layer") only_layer = argv[++i];
    else if (i + 1 < argc && flag == "--param-bits") param_bits = std::stoi(argv[++i]);
    else if (flag == "--all-iterations") whole.stop_on_convergence = false;
    else if (i + 1 < argc && flag == "--schedule") whole.schedule_iterations = std::stoi(argv[++i]);
    else if (flag == "--whole-only") full = true, per_layer = false;
  }
  at::set_num_threads(threads);
  at::NoGradGuard no_grad;

  qopt::DatasetSpec spec;
  spec.path = argv[2];
  spec.max_samples = samples;
  spec.shuffle = true;
  spec.seed = 1;
  spec.preprocess.mean = {0.286};
  spec.preprocess.std = {0.353};
  const qopt::Dataset data = Check(qopt::LoadDataset(spec));
  std::vector<at::Tensor> batches;
  for (int64_t b = 0; b < data.size(); b += 64) batches.push_back(data.inputs.slice(0, b, std::min<int64_t>(b + 64, data.size())));

  auto prepare = [&](qopt::Graph& graph) {
    graph = Check(qopt::ImportTorchScript(argv[1]));
    Check(qopt::FoldBatchNorms(graph).status());
    qopt::QuantSimOptions o;
    o.param_bitwidth = param_bits;
    o.per_channel = true;
    auto sim = Check(qopt::QuantSim::Create(graph, o));
    for (const auto& b : batches) Check(sim->ObserveBatch({c10::IValue(b)}));
    Check(sim->FinishCalibration());
    return sim;
  };
  qopt::Graph graph;
  auto sim = prepare(graph);

  std::printf("AdaRound per layer: %d iterations vs %d plain forward+backward passes, batch %d, %d threads\n",
              iterations, iterations, qopt::AdaRoundOptions::kDefaultBatchSize, threads);
  std::printf("%-24s %10s %10s %7s\n", "layer", "adaround s", "plain s", "ratio");
  double total_ada = 0, total_plain = 0;
  for (const qopt::Node* layer : sim->QuantizedWeightLayers()) {
    const int wid = layer->Param("weight");
    if (!per_layer || (!only_layer.empty() && layer->name != only_layer)) continue;
    std::vector<at::Tensor> xs, ys;
    for (const auto& b : batches) {
      qopt::ValueCapture in(layer->inputs[0]), out(layer->outputs[0]);
      Check(sim->RunFloat({c10::IValue(b)}, &in).status());
      Check(sim->RunFloat({c10::IValue(b)}, &out).status());
      xs.push_back(in.Take());
      ys.push_back(out.Take());
    }
    const at::Tensor x = at::cat(xs), y = at::cat(ys);
    const at::Tensor w = graph.values[wid].constant->toTensor();
    at::Tensor bias;
    if (layer->Param("bias") >= 0) bias = graph.values[layer->Param("bias")].constant->toTensor();
    const qopt::Quantizer& q = sim->param_quantizers().at(wid);
    qopt::AdaRoundOptions o;
    o.num_iterations = iterations;
    o.stop_on_convergence = false;  // the same iterations as the plain passes
    const int64_t batch = qopt::AdaRoundOptions::kDefaultBatchSize;

    auto run_adaround = [&] {
      const auto t0 = Clock::now();
      Check(qopt::AdaRoundLayer(graph, *layer, w, bias, q, x, y, o, 0, 1, nullptr));
      return Seconds(t0);
    };
    auto run_plain = [&] {
      c10::AutoGradMode grad(true);
      at::Tensor weight = w.clone().requires_grad_(true);
      at::Generator gen = at::detail::createCPUGenerator(1);
      const auto t0 = Clock::now();
      for (int it = 0; it < iterations; ++it) {
        const at::Tensor idx = at::randint(x.size(0), {batch}, gen, at::TensorOptions().dtype(at::kLong));
        const at::Tensor out = Check(qopt::LayerForward(graph, *layer, x.index_select(0, idx), weight, bias));
        const at::Tensor loss = (out - y.index_select(0, idx)).pow(2).sum(1).mean();
        loss.backward();
        weight.mutable_grad().zero_();
      }
      return Seconds(t0);
    };
    std::vector<double> ada, plain;
    for (int r = 0; r < 3; ++r) {
      ada.push_back(run_adaround());
      plain.push_back(run_plain());
    }
    const double a = Median(ada), p = Median(plain);
    total_ada += a;
    total_plain += p;
    std::printf("%-24s %10.3f %10.3f %7.2f\n", layer->name.c_str(), a, p, a / p);
    std::fflush(stdout);
  }
  if (per_layer) std::printf("%-24s %10.3f %10.3f %7.2f  (goal <= 1.5)\n", "all layers", total_ada, total_plain,
              total_ada / total_plain);

  if (full) {
    qopt::Graph fresh;
    auto fresh_sim = prepare(fresh);
    const auto t0 = Clock::now();
    auto results = Check(qopt::ApplyAdaRound(fresh, *fresh_sim, batches, whole));
    const double seconds = Seconds(t0);
    double nearest = 0, learned = 0, optimizing = 0;
    int64_t iterations_run = 0;
    std::printf("%-24s %10s %10s %10s %8s  %s\n", "layer", "iterations", "nearest", "learned", "seconds", "stop");
    for (const auto& r : results) {
      nearest += r.nearest_error;
      learned += r.adaround_error;
      optimizing += r.seconds;
      iterations_run += r.iterations;
      std::printf("%-24s %10d %10.4g %10.4g %8.2f  %s\n", r.layer.c_str(), r.iterations, r.nearest_error,
                  r.adaround_error, r.seconds, r.stop_reason.c_str());
    }
    std::printf("AdaRound, whole model, %s (W%d: at most %d iterations per layer, %zu layers, %d samples): "
                "%lld iterations in all, %.1f s (goal < 600 s), of which %.1f s optimizing the rounding and %.1f s "
                "capturing layer inputs and targets; reconstruction error %.3g learned vs %.3g nearest\n",
                whole.stop_on_convergence ? "stopping each layer once converged" : "every iteration", param_bits,
                results.empty() ? 0 : results.front().max_iterations, results.size(), samples,
                static_cast<long long>(iterations_run), seconds, optimizing, seconds - optimizing, learned, nearest);
  }
  return 0;
}
