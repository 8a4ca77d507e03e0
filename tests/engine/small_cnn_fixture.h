// The zoo's small CNN on real Fashion-MNIST images, as the analysis and mixed-precision
// tests start from: batch norms folded, a simulation calibrated on test images, and a
// recipe around the model for tests that run whole jobs.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "ir/graph.h"
#include "quant/quantsim.h"

namespace qopt::testing {

struct CalibratedSmallCnn {
  Graph graph;
  std::unique_ptr<QuantSim> sim;
  std::vector<Batch> batches;  // 4 x 100 labelled test images, also the calibration data
  std::map<std::string, int64_t> macs;  // per layer, at 1x1x28x28
};

/// zoo/small_cnn.pt with batch norms folded, shapes inferred and MACs counted at
/// 1x1x28x28, and its simulation with `options` calibrated on the first 400 test images.
std::unique_ptr<CalibratedSmallCnn> LoadCalibratedSmallCnn(const QuantSimOptions& options);

/// Top-1 of `sim` over `batches`.
double Top1(QuantSim& sim, const std::vector<Batch>& batches);

/// A recipe (JSON) for the small CNN: 256 training images to calibrate, the first 500 test
/// images to evaluate, 2 threads, `quantization` and `steps` as given (JSON).
std::string SmallCnnRecipe(const std::string& quantization, const std::string& steps);

}  // namespace qopt::testing
