// Inference time of TorchScript models in stock LibTorch (torch::jit::load and forward,
// nothing of qopt's): each model at each batch size on random inputs, rounds interleaving
// the models so machine noise hits each alike. Prints one JSON object: per model and batch
// size the median milliseconds of one forward pass.
//
//   model_speed --shape 1,28,28 --batches 1,64 --rounds 7 --iterations 50 A.pt B.pt ...
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/script.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench_util.h"

namespace {

std::vector<int64_t> Ints(const std::string& text) {
  std::vector<int64_t> out;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(part, &v) || v <= 0) {
      std::fprintf(stderr, "error: '%s' is not a list of positive integers\n", text.c_str());
      std::exit(2);
    }
    out.push_back(v);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> shape = {1, 28, 28}, batches = {1, 64};
  int rounds = 7, iterations = 50;
  std::vector<std::string> paths;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "error: %s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--shape") {
      shape = Ints(value());
    } else if (arg == "--batches") {
      batches = Ints(value());
    } else if (arg == "--rounds") {
      rounds = static_cast<int>(Ints(value())[0]);
    } else if (arg == "--iterations") {
      iterations = static_cast<int>(Ints(value())[0]);
    } else {
      paths.push_back(arg);
    }
  }
  if (paths.empty()) {
    std::fprintf(stderr, "usage: model_speed [--shape C,H,W] [--batches 1,64] [--rounds N] [--iterations N] MODEL.pt...\n");
    return 2;
  }
  at::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  torch::NoGradGuard no_grad;
  std::vector<torch::jit::Module> models;
  for (const std::string& p : paths) {
    models.push_back(torch::jit::load(p));
    models.back().eval();
  }
  // times[model][batch] = per-round medians
  std::vector<std::map<int64_t, std::vector<double>>> times(models.size());
  for (int r = 0; r < rounds; ++r) {
    for (int64_t batch : batches) {
      std::vector<int64_t> full = {batch};
      full.insert(full.end(), shape.begin(), shape.end());
      const at::Tensor x = torch::randn(full);
      for (size_t m = 0; m < models.size(); ++m) {
        for (int w = 0; w < 3; ++w) models[m].forward({x});  // warm-up (profiling executor)
        std::vector<double> runs;
        for (int k = 0; k < iterations; ++k) {
          const auto t0 = std::chrono::steady_clock::now();
          models[m].forward({x});
          runs.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        }
        times[m][batch].push_back(qopt::bench::Median(runs));
      }
    }
  }
  std::printf("{\"threads\": %d, \"models\": {", at::get_num_threads());
  for (size_t m = 0; m < models.size(); ++m) {
    std::printf("%s\"%s\": {", m ? ", " : "", paths[m].c_str());
    size_t k = 0;
    for (const auto& [batch, medians] : times[m]) {
      std::printf("%s\"%lld\": %.4f", k++ ? ", " : "", static_cast<long long>(batch), qopt::bench::Median(medians));
    }
    std::printf("}");
  }
  std::printf("}}\n");
  return 0;
}
