// Bias correction on real TorchScript fixtures: the empirical shift against one worked out
// by hand, the analytical shift against numerical integration over the batch-norm
// statistics, the mean output error of 4-bit ResNet-18 / MobileNetV2 on held-out samples,
// skipped layers, cancellation and bad arguments.
#include "techniques/bias_correction.h"

#include <cmath>
#include <limits>
#include <stdexcept>

#include <ATen/ATen.h>

#include "data/tensor_file.h"
#include "ir/import.h"
#include "ir/interpreter.h"
#include "passes/batch_norm_fold.h"
#include "passes/cross_layer_equalization.h"
#include "test_util.h"

namespace qopt {
namespace {

using ::qopt::testing::Fixture;
using ::qopt::testing::IsOk;
using ::qopt::testing::StatusIs;
using ::testing::HasSubstr;
using Mode = BiasCorrectionOptions::Mode;

std::unique_ptr<QuantSim> CalibratedSim(const Graph& g, const std::vector<at::Tensor>& batches,
                                        int param_bitwidth = 4) {
  QuantSimOptions o;
  o.param_bitwidth = param_bitwidth;
  o.per_channel = false;
  auto sim = QuantSim::Create(g, std::move(o));
  EXPECT_THAT(sim, IsOk());
  if (!sim.ok()) return nullptr;
  for (const at::Tensor& b : batches) EXPECT_THAT((*sim)->ObserveBatch({b}), IsOk());
  EXPECT_THAT((*sim)->FinishCalibration(), IsOk());
  return std::move(*sim);
}

const Node& Layer(const Graph& g, const std::string& name) {
  const Node* n = g.FindNode(name);
  // gtest reports the exception as the test's failure.
  if (n == nullptr) throw std::runtime_error("no layer " + name + " in\n" + g.ToString());
  return *n;
}

// The layer's bias as float64; zeros when it has none.
at::Tensor Bias(const Graph& g, const std::string& name) {
  const Node& n = Layer(g, name);
  const int64_t out = g.values[n.Param("weight")].constant->toTensor().size(0);
  if (n.Param("bias") < 0) return at::zeros({out}, at::kDouble);
  return g.values[n.Param("bias")].constant->toTensor().to(at::kDouble).clone();
}

// Conv / linear layers, in forward order.
std::vector<std::string> LayerNames(const Graph& g) {
  std::vector<std::string> out;
  for (const Node* n : g.LiveNodes()) {
    if (n->kind == OpKind::kConv || n->kind == OpKind::kLinear) out.push_back(n->name);
  }
  return out;
}

at::Tensor Weight(const Graph& g, const std::string& name) {
  return g.values[Layer(g, name).Param("weight")].constant->toTensor();
}

at::Tensor QuantizedWeight(const Graph& g, const QuantSim& sim, const std::string& name) {
  const int w = Layer(g, name).Param("weight");
  return sim.param_quantizers().at(w).Apply(g.values[w].constant->toTensor());
}

std::vector<at::Tensor> CalibSlices(int64_t begin, int64_t end, int64_t batch_size) {
  auto data = LoadNpy(Fixture("calib.npy"));
  EXPECT_THAT(data, IsOk());
  std::vector<at::Tensor> out;
  for (int64_t i = begin; data.ok() && i < end; i += batch_size) {
    out.push_back(data->slice(0, i, std::min(end, i + batch_size)));
  }
  return out;
}

// Per-channel sums (dim 1) of one value as it is produced, before `inner` (the sim, or
// nothing for the floating-point model) sees it: a layer's output before its quantizer.
class MeanProbe : public ValueObserver {
 public:
  MeanProbe(ValueObserver* inner, int value_id) : inner_(inner), value_id_(value_id) {}
  void OnParam(const Value& p, at::Tensor& t) override {
    if (inner_) inner_->OnParam(p, t);
  }
  void OnValue(const Value& v, c10::IValue& iv) override {
    if (v.id == value_id_) {
      const at::Tensor y = iv.toTensor();
      std::vector<int64_t> dims = {0};
      for (int64_t d = 2; d < y.dim(); ++d) dims.push_back(d);
      const at::Tensor s = y.to(at::kDouble).sum(dims);
      sum_ = sum_.defined() ? sum_ + s : s;
      count_ += y.numel() / y.size(1);
    }
    if (inner_) inner_->OnValue(v, iv);
  }
  bool RetainsValues() const override { return false; }
  bool Bypasses(const Node& n) const override { return inner_ && inner_->Bypasses(n); }
  at::Tensor Mean() const { return sum_ / static_cast<double>(count_); }

 private:
  ValueObserver* inner_;
  int value_id_;
  at::Tensor sum_;
  int64_t count_ = 0;
};

// The mean of `layer`'s output over `batches`, in the sim (before the output quantizer)
// or, with no sim, in the floating-point model.
at::Tensor LayerOutputMean(const Graph& g, QuantSim* sim, const std::string& layer,
                           const std::vector<at::Tensor>& batches) {
  Interpreter interpreter(g);
  MeanProbe probe(sim, Layer(g, layer).outputs[0]);
  for (const at::Tensor& b : batches) EXPECT_THAT(interpreter.Run({b}, &probe), IsOk());
  return probe.Mean();
}

// ---------------------------------------------------------------------------------------
// Empirical correction worked out by hand on one layer: E_fp - E_q = W E[x] - W_q E[Q(x)]
// (the bias is not quantized by the default config, so it cancels).

struct HandCase {
  std::string fixture;
  std::string layer;
  std::vector<int64_t> input_shape;  // one batch
};

void PrintTo(const HandCase& c, std::ostream* os) { *os << c.fixture; }

class BiasCorrectionByHandTest : public ::testing::TestWithParam<HandCase> {};

TEST_P(BiasCorrectionByHandTest, ShiftIsTheMeanOutputError) {
  const HandCase& c = GetParam();
  auto g = ImportTorchScript(Fixture(c.fixture));
  ASSERT_THAT(g, IsOk());
  at::NoGradGuard no_grad;
  at::manual_seed(11);
  // Inputs with a per-channel mean well away from zero, so the weight error shows.
  const int64_t in_channels = c.input_shape[1];
  std::vector<int64_t> channel_shape(c.input_shape.size(), 1);
  channel_shape[1] = in_channels;
  const at::Tensor offset = at::linspace(-1.5, 2.0, in_channels).reshape(channel_shape);
  std::vector<at::Tensor> batches;
  for (int i = 0; i < 3; ++i) batches.push_back(at::randn(c.input_shape) * 0.7 + offset);
  auto sim = CalibratedSim(*g, batches);
  ASSERT_NE(sim, nullptr);

  // By hand: the means of the input as the float model and the sim see it.
  const auto in_q = sim->activation_quantizers().find(g->inputs()[0]);
  ASSERT_NE(in_q, sim->activation_quantizers().end()) << "the default config quantizes inputs";
  at::Tensor sum_x = at::zeros({in_channels}, at::kDouble), sum_xq = sum_x.clone();
  int64_t count = 0;
  for (const at::Tensor& b : batches) {
    std::vector<int64_t> dims = {0};
    for (int64_t d = 2; d < b.dim(); ++d) dims.push_back(d);
    sum_x += b.to(at::kDouble).sum(dims);
    sum_xq += in_q->second.Apply(b).to(at::kDouble).sum(dims);
    count += b.numel() / in_channels;
  }
  const at::Tensor mean_x = sum_x / count, mean_xq = sum_xq / count;
  const at::Tensor w = Weight(*g, c.layer).to(at::kDouble).reshape({-1, in_channels});
  const at::Tensor w_q =
      QuantizedWeight(*g, *sim, c.layer).to(at::kDouble).reshape({-1, in_channels});
  const at::Tensor expected = at::mv(w, mean_x) - at::mv(w_q, mean_xq);
  ASSERT_GT(expected.abs().max().item<double>(), 1e-2) << "4-bit weights should shift the mean";

  EXPECT_EQ(Layer(*g, c.layer).Param("bias") >= 0, c.fixture == "bc_linear.pt")
      << "the 1x1 conv has no bias";
  const at::Tensor before = Bias(*g, c.layer);
  auto results = CorrectBias(*g, *sim, batches, {});
  ASSERT_THAT(results, IsOk());
  ASSERT_EQ(results->size(), 1u);
  EXPECT_EQ((*results)[0].layer, c.layer);
  EXPECT_EQ((*results)[0].method, "empirical");
  EXPECT_NEAR((*results)[0].mean_abs_shift, expected.abs().mean().item<double>(), 1e-6);
  ASSERT_GE(Layer(*g, c.layer).Param("bias"), 0);
  const at::Tensor shift = Bias(*g, c.layer) - before;
  EXPECT_LE((shift - expected).abs().max().item<double>(), 1e-5)
      << "shift " << shift << "\nexpected " << expected;

  // The sim sees the new bias: the layer's mean output (before its output quantizer) now
  // matches the floating-point model's, W E[x] + b.
  const at::Tensor float_mean = at::mv(w, mean_x) + before;
  EXPECT_LE(
      (LayerOutputMean(*g, sim.get(), c.layer, batches) - float_mean).abs().max().item<double>(),
      1e-5);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, BiasCorrectionByHandTest,
                         ::testing::Values(HandCase{"bc_linear.pt", "fc", {64, 4}},
                                           // No bias: correction creates one.
                                           HandCase{"bc_conv1x1.pt", "conv", {4, 4, 6, 6}}));

// ---------------------------------------------------------------------------------------
// Analytical correction: E[clamp(X, 0, c)] for X ~ N(beta, gamma^2), by trapezoidal
// integration here, against the closed form in CorrectBias.

double ClampedMeanByIntegration(double mu, double sigma, double lo, double hi) {
  auto clamp = [&](double x) { return std::min(std::max(x, lo), hi); };
  if (sigma == 0.0) return clamp(mu);
  const int n = 400000;
  const double z0 = -12.0, dz = 24.0 / n;
  double sum = 0.0;
  for (int i = 0; i <= n; ++i) {
    const double z = z0 + i * dz;
    const double weight = (i == 0 || i == n) ? 0.5 : 1.0;
    sum += weight * clamp(mu + sigma * z) * std::exp(-0.5 * z * z);
  }
  return sum * dz / std::sqrt(2.0 * M_PI);
}

TEST(BiasCorrection, ClampedNormalMeanMatchesIntegration) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  const std::vector<double> mus = {-3.0, -0.4, 0.0, 0.7, 2.5, 5.9, 8.0};
  const std::vector<double> sigmas = {0.0, 0.3, 1.0, 2.5};
  const std::vector<std::pair<double, double>> bounds = {{-kInf, kInf}, {0.0, kInf},  {0.0, 6.0},
                                                         {0.0, 1.3},    {-kInf, 2.0}, {0.0, 0.0}};
  for (auto [lo, hi] : bounds) {
    std::vector<double> mu_v, sigma_v, expected;
    for (double mu : mus) {
      for (double sigma : sigmas) {
        mu_v.push_back(mu);
        sigma_v.push_back(sigma);
        expected.push_back(ClampedMeanByIntegration(mu, sigma, lo, hi));
      }
    }
    const at::Tensor mu = at::tensor(mu_v, at::kDouble);
    const at::Tensor got =
        ClampedNormalMean(mu, at::tensor(sigma_v, at::kDouble), lo, at::full_like(mu, hi));
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_NEAR(got[i].item<double>(), expected[i], 1e-7)
          << "mu " << mu_v[i] << " sigma " << sigma_v[i] << " in [" << lo << ", " << hi << "]";
    }
  }
}

class BiasCorrectionAnalyticalTest : public ::testing::TestWithParam<std::string> {};

TEST_P(BiasCorrectionAnalyticalTest, ShiftFollowsTheBatchNormStatistics) {
  const bool relu6 = GetParam() == "bc_bn_relu6.pt";
  auto g = ImportTorchScript(Fixture(GetParam()));
  ASSERT_THAT(g, IsOk());
  at::NoGradGuard no_grad;
  ASSERT_THAT(FoldBatchNorms(*g), IsOk());
  // Equalization rescales the statistics and leaves a per-channel clip on the ReLU6.
  if (relu6) {
    ASSERT_THAT(CrossLayerEqualize(*g), IsOk());
  }
  const Node& fc1 = Layer(*g, "fc1");
  const Node& fc2 = Layer(*g, "fc2");
  ASSERT_EQ(g->bn_stats.count(fc1.id), 1u);
  const at::Tensor mean = g->bn_stats.at(fc1.id).mean.to(at::kDouble);
  const at::Tensor std = g->bn_stats.at(fc1.id).std.to(at::kDouble);
  const int64_t channels = mean.numel();
  at::Tensor clip = at::full({channels}, std::numeric_limits<double>::infinity(), at::kDouble);
  if (relu6) {
    const Node& act = g->nodes[g->values[fc2.inputs[0]].producer];
    ASSERT_EQ(act.kind, OpKind::kClip);
    ASSERT_GE(act.Param("clip_max"), 0) << "equalization clips each channel";
    clip = g->values[act.Param("clip_max")].constant->toTensor().to(at::kDouble).flatten();
  }
  std::vector<double> ex(channels), relu_only(channels);
  for (int64_t i = 0; i < channels; ++i) {
    const double mu = mean[i].item<double>(), sigma = std[i].item<double>();
    ex[i] = ClampedMeanByIntegration(mu, sigma, 0.0, clip[i].item<double>());
    relu_only[i] =
        ClampedMeanByIntegration(mu, sigma, 0.0, std::numeric_limits<double>::infinity());
  }
  const at::Tensor e_x = at::tensor(ex, at::kDouble);
  // The case is meaningful: the rectifier moves the mean, and so does ReLU6's clip.
  EXPECT_GT((e_x - mean).abs().max().item<double>(), 0.1);
  EXPECT_TRUE((std == 0).any().item<bool>()) << "one channel is a point mass";
  if (relu6) {
    EXPECT_GT((at::tensor(relu_only, at::kDouble) - e_x).abs().max().item<double>(), 0.1);
  }

  at::manual_seed(3);
  std::vector<at::Tensor> batches = {at::randn({32, 8}), at::randn({32, 8})};
  auto sim = CalibratedSim(*g, batches);
  ASSERT_NE(sim, nullptr);
  const at::Tensor w2 = Weight(*g, "fc2").to(at::kDouble);
  const at::Tensor w2_q = QuantizedWeight(*g, *sim, "fc2").to(at::kDouble);
  const at::Tensor expected = -at::mv(w2_q - w2, e_x);
  ASSERT_GT(expected.abs().max().item<double>(), 1e-2);
  const at::Tensor before = Bias(*g, "fc2");

  BiasCorrectionOptions options;
  options.mode = Mode::kAnalytical;
  auto results = CorrectBias(*g, *sim, batches, options);
  ASSERT_THAT(results, IsOk());
  ASSERT_EQ(results->size(), 2u);
  EXPECT_EQ((*results)[0].layer, "fc1");
  EXPECT_EQ((*results)[0].method, "empirical") << "nothing is known about the model input";
  EXPECT_EQ((*results)[1].layer, "fc2");
  EXPECT_EQ((*results)[1].method, "analytical");
  const at::Tensor shift = Bias(*g, "fc2") - before;
  EXPECT_LE((shift - expected).abs().max().item<double>(), 1e-5)
      << "shift " << shift << "\nexpected " << expected;
}

INSTANTIATE_TEST_SUITE_P(Activations, BiasCorrectionAnalyticalTest,
                         ::testing::Values("bc_bn_relu.pt", "bc_bn_relu6.pt"));

TEST(BiasCorrection, AnalyticalWithoutBatchesNeedsStatisticsEverywhere) {
  auto g = ImportTorchScript(Fixture("bc_bn_relu.pt"));
  ASSERT_THAT(g, IsOk());
  ASSERT_THAT(FoldBatchNorms(*g), IsOk());
  at::manual_seed(3);
  auto sim = CalibratedSim(*g, {at::randn({16, 8})});
  ASSERT_NE(sim, nullptr);
  BiasCorrectionOptions options;
  options.mode = Mode::kAnalytical;
  EXPECT_THAT(CorrectBias(*g, *sim, {}, options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no calibration batches")));
  // fc1 (no statistics) skipped: analytical needs no data at all.
  options.skip_layers = {"fc1"};
  auto results = CorrectBias(*g, *sim, {}, options);
  ASSERT_THAT(results, IsOk());
  ASSERT_EQ(results->size(), 1u);
  EXPECT_EQ((*results)[0].method, "analytical");
}

// ---------------------------------------------------------------------------------------
// Real networks at 4-bit per-tensor weights: the mean output error on held-out samples.

// Mean over output channels of |E_q[y_c] - E_fp[y_c]|, means over the samples.
double MeanOutputError(QuantSim& sim, const std::vector<at::Tensor>& batches,
                       const at::Tensor& float_mean) {
  at::Tensor sum;
  int64_t count = 0;
  for (const at::Tensor& b : batches) {
    auto out = sim.Forward(b);
    EXPECT_THAT(out, IsOk());
    if (!out.ok()) return 0.0;
    const at::Tensor s = out->to(at::kDouble).sum(0);
    sum = sum.defined() ? sum + s : s;
    count += b.size(0);
  }
  return (sum / count - float_mean).abs().mean().item<double>();
}

struct NetCase {
  std::string fixture;
  Mode mode;
  std::string skip;  // a layer to leave alone
  double max_ratio;  // error after / before, at most
};

void PrintTo(const NetCase& c, std::ostream* os) {
  *os << c.fixture << (c.mode == Mode::kAnalytical ? " analytical" : " empirical");
}

class BiasCorrectionNetworkTest : public ::testing::TestWithParam<NetCase> {};

TEST_P(BiasCorrectionNetworkTest, HeldOutMeanOutputErrorDrops) {
  const NetCase& c = GetParam();
  auto g = ImportTorchScript(Fixture(c.fixture));
  ASSERT_THAT(g, IsOk());
  at::NoGradGuard no_grad;
  ASSERT_THAT(FoldBatchNorms(*g), IsOk());
  const std::vector<at::Tensor> calib = CalibSlices(0, 16, 8);
  const std::vector<at::Tensor> held_out = CalibSlices(16, 32, 8);
  auto sim = CalibratedSim(*g, calib);
  ASSERT_NE(sim, nullptr);

  // The floating-point reference, before the corrections change the graph's biases.
  at::Tensor float_sum;
  for (const at::Tensor& b : held_out) {
    auto out = sim->ForwardFloat(b);
    ASSERT_THAT(out, IsOk());
    const at::Tensor s = out->to(at::kDouble).sum(0);
    float_sum = float_sum.defined() ? float_sum + s : s;
  }
  const at::Tensor float_mean = float_sum / 16.0;
  const double before = MeanOutputError(*sim, held_out, float_mean);
  const at::Tensor skipped_bias = Bias(*g, c.skip);
  const int skipped_bias_id = Layer(*g, c.skip).Param("bias");

  BiasCorrectionOptions options;
  options.mode = c.mode;
  options.skip_layers = {c.skip};
  int calls = 0;
  options.on_layer = [&](int done, int total, const std::string& layer) {
    EXPECT_EQ(done, ++calls);
    EXPECT_NE(layer, c.skip);
    EXPECT_LE(done, total);
    return absl::OkStatus();
  };
  auto results = CorrectBias(*g, *sim, calib, options);
  ASSERT_THAT(results, IsOk());
  const double after = MeanOutputError(*sim, held_out, float_mean);
  int analytical = 0;
  double largest = 0.0;
  for (const auto& r : *results) {
    EXPECT_NE(r.layer, c.skip);
    analytical += r.method == "analytical";
    largest = std::max(largest, r.mean_abs_shift);
  }
  std::cout << c.fixture << (c.mode == Mode::kAnalytical ? " analytical" : " empirical") << ": "
            << results->size() << " layers (" << analytical
            << " analytical), held-out mean output error " << before << " -> " << after << " (x"
            << after / before << "), largest mean |shift| " << largest << "\n";
  EXPECT_EQ(calls, static_cast<int>(results->size()));
  if (c.mode == Mode::kAnalytical) {
    EXPECT_GT(analytical, 0);
  } else {
    EXPECT_EQ(analytical, 0);
  }
  EXPECT_GT(before, 0.0);
  EXPECT_LE(after, c.max_ratio * before);
  // The skipped layer is untouched: same value, same tensor.
  EXPECT_EQ(Layer(*g, c.skip).Param("bias"), skipped_bias_id);
  EXPECT_TRUE(at::equal(Bias(*g, c.skip), skipped_bias));
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, BiasCorrectionNetworkTest,
    // Measured: resnet18 x0.29 (both modes), mobilenet_v2 x0.42 / x0.44.
    ::testing::Values(NetCase{"resnet18.pt", Mode::kEmpirical, "layer2.0.conv1", 0.4},
                      NetCase{"resnet18.pt", Mode::kAnalytical, "layer2.0.conv1", 0.4},
                      NetCase{"mobilenet_v2.pt", Mode::kEmpirical, "features.2.conv.1.0", 0.6},
                      NetCase{"mobilenet_v2.pt", Mode::kAnalytical, "features.2.conv.1.0", 0.6}));

// After empirical correction every corrected layer's mean output in the sim (before its
// output quantizer) matches the floating-point model's on the calibration data: each
// layer is corrected with the earlier corrections in place.
TEST(BiasCorrection, EmpiricalMatchesFloatMeansOnCalibrationData) {
  auto g = ImportTorchScript(Fixture("small_scripted.pt"));
  ASSERT_THAT(g, IsOk());
  at::NoGradGuard no_grad;
  ASSERT_THAT(FoldBatchNorms(*g), IsOk());
  const std::vector<at::Tensor> calib = CalibSlices(0, 16, 8);
  auto sim = CalibratedSim(*g, calib);
  ASSERT_NE(sim, nullptr);
  const std::vector<std::string> layers = LayerNames(*g);
  ASSERT_EQ(layers.size(), 3u) << "conv1, conv2, fc";
  std::vector<at::Tensor> float_means, errors_before;
  for (const auto& layer : layers) {
    float_means.push_back(LayerOutputMean(*g, nullptr, layer, calib));
    errors_before.push_back(LayerOutputMean(*g, sim.get(), layer, calib) - float_means.back());
  }
  auto results = CorrectBias(*g, *sim, calib, {});
  ASSERT_THAT(results, IsOk());
  ASSERT_EQ(results->size(), layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    EXPECT_EQ((*results)[i].layer, layers[i]);
    const double before = errors_before[i].abs().max().item<double>();
    const double after = (LayerOutputMean(*g, sim.get(), layers[i], calib) - float_means[i])
                             .abs()
                             .max()
                             .item<double>();
    std::cout << layers[i] << ": largest channel mean error " << before << " -> " << after << "\n";
    EXPECT_GT(before, 1e-4) << layers[i];
    EXPECT_LE(after, 1e-6) << layers[i];
  }
}

// ---------------------------------------------------------------------------------------
// Control and errors.

TEST(BiasCorrection, CancelledAfterALayerStops) {
  auto g = ImportTorchScript(Fixture("small_scripted.pt"));
  ASSERT_THAT(g, IsOk());
  at::NoGradGuard no_grad;
  ASSERT_THAT(FoldBatchNorms(*g), IsOk());
  const std::vector<at::Tensor> calib = CalibSlices(0, 8, 8);
  auto sim = CalibratedSim(*g, calib);
  ASSERT_NE(sim, nullptr);
  const std::vector<std::string> layers = LayerNames(*g);
  ASSERT_EQ(layers.size(), 3u) << "conv1, conv2, fc";
  std::vector<at::Tensor> biases;
  for (const auto& layer : layers) biases.push_back(Bias(*g, layer));
  std::vector<std::string> seen;
  BiasCorrectionOptions options;
  options.on_layer = [&](int done, int total, const std::string& layer) {
    seen.push_back(layer);
    EXPECT_EQ(done, 1);
    EXPECT_EQ(total, 3);
    return absl::CancelledError("job cancelled");
  };
  EXPECT_THAT(CorrectBias(*g, *sim, calib, options),
              StatusIs(absl::StatusCode::kCancelled, HasSubstr("job cancelled")));
  EXPECT_EQ(seen, std::vector<std::string>{layers[0]});
  EXPECT_FALSE(at::equal(Bias(*g, layers[0]), biases[0])) << "the first layer was corrected";
  EXPECT_TRUE(at::equal(Bias(*g, layers[1]), biases[1]));
  EXPECT_TRUE(at::equal(Bias(*g, layers[2]), biases[2]));
}

TEST(BiasCorrection, ArgumentErrors) {
  auto g = ImportTorchScript(Fixture("small_scripted.pt"));
  ASSERT_THAT(g, IsOk());
  const std::vector<at::Tensor> calib = CalibSlices(0, 8, 8);
  BiasCorrectionOptions options;
  options.skip_layers = {"fc", "layer9.conv"};
  {
    auto uncalibrated = QuantSim::Create(*g, {});
    ASSERT_THAT(uncalibrated, IsOk());
    EXPECT_THAT(CorrectBias(*g, **uncalibrated, calib, {}),
                StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("calibrate first")));
  }
  auto sim = CalibratedSim(*g, calib);
  ASSERT_NE(sim, nullptr);
  const at::Tensor fc = Bias(*g, "fc");
  EXPECT_THAT(CorrectBias(*g, *sim, calib, options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'layer9.conv'")));
  EXPECT_THAT(CorrectBias(*g, *sim, {}, {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no calibration batches")));
  EXPECT_TRUE(at::equal(Bias(*g, "fc"), fc)) << "errors leave the model as it was";
  auto other = ImportTorchScript(Fixture("small_scripted.pt"));
  ASSERT_THAT(other, IsOk());
  EXPECT_THAT(CorrectBias(*other, *sim, calib, {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("another graph")));
}

}  // namespace
}  // namespace qopt
