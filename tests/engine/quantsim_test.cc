// QuantSim: placement from configs, calibration, simulated forward on every fixture.
#include "quant/quantsim.h"

#include <cstdio>
#include <map>
#include <string>

#include <ATen/ATen.h>
#include <torch/script.h>

#include "data/dataset.h"
#include "data/tensor_file.h"
#include "export/encodings_json.h"
#include "export/torchscript_export.h"
#include "ir/import.h"
#include "passes/batch_norm_fold.h"
#include "passes/cross_layer_equalization.h"
#include "quant/quantsim_config.h"
#include "test_util.h"

namespace qopt {
namespace {

using ::qopt::testing::Fixture;
using ::qopt::testing::IsOk;
using ::qopt::testing::StatusIs;
using ::testing::HasSubstr;

std::vector<at::Tensor> Batches(int n, int batch_size = 8) {
  auto data = LoadNpy(Fixture("calib.npy"));
  EXPECT_THAT(data, IsOk());
  std::vector<at::Tensor> out;
  for (const Batch& b : MakeBatches(Dataset{*data}, batch_size)) {
    if (static_cast<int>(out.size()) < n) out.push_back(b.inputs);
  }
  return out;
}

Graph FoldedGraph(const std::string& fixture) {
  auto g = ImportTorchScript(Fixture(fixture));
  EXPECT_THAT(g, IsOk());
  EXPECT_THAT(FoldBatchNorms(*g), IsOk());
  return std::move(*g);
}

std::unique_ptr<QuantSim> Calibrated(const Graph& g, QuantSimOptions o, int batches = 2) {
  auto sim = QuantSim::Create(g, std::move(o));
  EXPECT_THAT(sim, IsOk());
  for (const at::Tensor& b : Batches(batches)) EXPECT_THAT((*sim)->ObserveBatch({b}), IsOk());
  EXPECT_THAT((*sim)->FinishCalibration(), IsOk());
  return std::move(*sim);
}

// A sim of `g` placed by the quantsim config `json` (which must parse).
absl::StatusOr<std::unique_ptr<QuantSim>> SimWithConfig(const Graph& g, const std::string& json) {
  auto config = ParseQuantSimConfig(json);
  EXPECT_THAT(config, IsOk());
  if (!config.ok()) return config.status();
  QuantSimOptions o;
  o.config = *config;
  return QuantSim::Create(g, o);
}

double SqnrDb(const at::Tensor& ref, const at::Tensor& q) {
  return 10.0 * std::log10(ref.pow(2).sum().item<double>() /
                           std::max((ref - q).pow(2).sum().item<double>(), 1e-30));
}

struct SimCase {
  std::string fixture;
  double min_w8a8_db;
};

void PrintTo(const SimCase& c, std::ostream* os) { *os << c.fixture; }

class W8A8Test : public ::testing::TestWithParam<SimCase> {};

TEST_P(W8A8Test, SimulatesEveryFixture) {
  at::NoGradGuard no_grad;
  const Graph g = FoldedGraph(GetParam().fixture);
  const at::Tensor x = Batches(2).back();  // a calibration batch: no range is exceeded
  const at::Tensor ref = *Interpreter(g).Forward(x);

  QuantSimOptions w8a8;
  w8a8.per_channel = true;
  auto sim = Calibrated(g, w8a8);
  EXPECT_GE(sim->param_quantizers().size(), 3u);  // the scripted net has three layers
  EXPECT_GE(sim->activation_quantizers().size(), 4u);
  auto y8 = sim->Forward(x);
  ASSERT_THAT(y8, IsOk());
  EXPECT_FALSE(at::equal(*y8, ref)) << "quantizers must change the output";
  const double db8 = SqnrDb(ref, *y8);

  QuantSimOptions w16a16 = w8a8;
  w16a16.param_bitwidth = w16a16.activation_bitwidth = 16;
  auto y16 = Calibrated(g, w16a16)->Forward(x);
  ASSERT_THAT(y16, IsOk());
  const double db16 = SqnrDb(ref, *y16);
  EXPECT_GT(db8, GetParam().min_w8a8_db) << GetParam().fixture;
  EXPECT_GT(db16, db8 + 20.0) << GetParam().fixture << ": 16 bits must be far closer";
  // The float path of the sim is the model itself.
  EXPECT_TRUE(at::equal(*sim->ForwardFloat(x), ref));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, W8A8Test,
                         ::testing::Values(SimCase{"resnet18.pt", 15.0},
                                           SimCase{"mobilenet_v2.pt", 4.0},
                                           SimCase{"googlenet.pt", 15.0},
                                           SimCase{"small_scripted.pt", 25.0}),
                         [](const auto& info) {
                           std::string n = info.param.fixture;
                           return n.substr(0, n.find('.'));
                         });

TEST(QuantSimTest, DefaultPlacementOnResNet18) {
  const Graph g = FoldedGraph("resnet18.pt");
  QuantSimOptions o;
  o.per_channel = true;
  auto sim = QuantSim::Create(g, o);
  ASSERT_THAT(sim, IsOk());
  // conv + relu is a supergroup: only the relu output is quantized.
  EXPECT_EQ((*sim)->FindActivation("layer1.0.conv1", false, 0), -1);
  EXPECT_GE((*sim)->FindActivation("layer1.0.relu", false, 0), 0);
  // The block's conv2 feeds the add (no supergroup), add + relu is one.
  EXPECT_GE((*sim)->FindActivation("layer1.0.conv2", false, 0), 0);
  EXPECT_EQ((*sim)->FindActivation("layer1.0.add", false, 0), -1);
  EXPECT_GE((*sim)->FindActivation("conv1", true, 0), 0);  // model input
  EXPECT_GE((*sim)->FindActivation("fc", false, 0), 0);    // model output
  EXPECT_EQ((*sim)->FindActivation("flatten", false, 0), -1);  // data movement

  const Node* conv = g.FindNode("layer1.0.conv1");
  const auto& pq = (*sim)->param_quantizers();
  ASSERT_TRUE(pq.count(conv->Param("weight")));
  EXPECT_EQ(pq.at(conv->Param("weight")).encodings().size(), 64u);
  EXPECT_TRUE(pq.at(conv->Param("weight")).spec().symmetric);
  EXPECT_FALSE(pq.count(conv->Param("bias"))) << "biases are not quantized by default";
}

TEST(QuantSimTest, ExcludedLayersStayFloat) {
  const Graph g = FoldedGraph("resnet18.pt");
  QuantSimOptions o;
  o.exclude_layers = {"fc", "layer1.0.conv1"};
  auto sim = QuantSim::Create(g, o);
  ASSERT_THAT(sim, IsOk());
  EXPECT_EQ((*sim)->FindActivation("fc", false, 0), -1);
  EXPECT_FALSE((*sim)->param_quantizers().count(g.FindNode("fc")->Param("weight")));
  EXPECT_FALSE((*sim)->param_quantizers().count(g.FindNode("layer1.0.conv1")->Param("weight")));
  o.exclude_layers = {"no.such.layer"};
  EXPECT_THAT(QuantSim::Create(g, o), StatusIs(absl::StatusCode::kInvalidArgument,
                                               HasSubstr("no layer named 'no.such.layer'")));
}

TEST(QuantSimTest, AimetConfigFileControlsPlacement) {
  const Graph g = FoldedGraph("resnet18.pt");
  auto config = ParseQuantSimConfig(R"({
    "defaults": {
      "ops": {"is_output_quantized": "True", "is_symmetric": "False"},
      "params": {"is_quantized": "True", "is_symmetric": "True"},
      "strict_symmetric": "False", "unsigned_symmetric": "True",
      "per_channel_quantization": "False"
    },
    "params": {"bias": {"is_quantized": "True"}},
    "op_type": {"Relu": {"is_output_quantized": "False"},
                "Gemm": {"per_channel_quantization": "True"}},
    "supergroups": [],
    "model_input": {"is_input_quantized": "False"},
    "model_output": {},
    "layers": {"layer2.0.conv1": {"params": {"weight": {"is_quantized": false}}}}
  })");
  ASSERT_THAT(config, IsOk());
  QuantSimOptions o;
  o.config = *config;
  auto sim = QuantSim::Create(g, o);
  ASSERT_THAT(sim, IsOk());
  const auto& pq = (*sim)->param_quantizers();
  EXPECT_EQ((*sim)->FindActivation("layer1.0.relu", false, 0), -1);
  EXPECT_GE((*sim)->FindActivation("layer1.0.conv1", false, 0), 0);  // no supergroups
  EXPECT_EQ((*sim)->FindActivation("conv1", true, 0), -1);
  EXPECT_TRUE(pq.count(g.FindNode("layer1.0.conv1")->Param("bias")));
  EXPECT_EQ(pq.at(g.FindNode("layer1.0.conv1")->Param("weight")).axis(), -1);
  EXPECT_EQ(pq.at(g.FindNode("fc")->Param("weight")).axis(), 0);
  EXPECT_FALSE(pq.count(g.FindNode("layer2.0.conv1")->Param("weight")));
}

TEST(QuantSimTest, ConfigErrorsNameTheKey) {
  EXPECT_THAT(ParseQuantSimConfig(R"({"defaults": {"opz": {}}})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown key 'opz'")));
  EXPECT_THAT(ParseQuantSimConfig(R"({"op_type": {"Conv": {"is_output_quantized": "yes"}}})"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("op_type.Conv.is_output_quantized")));
  EXPECT_THAT(ParseQuantSimConfig("{"), StatusIs(absl::StatusCode::kInvalidArgument,
                                                 HasSubstr("not valid JSON")));
  // Found by the quantsim_config fuzzer: a number in an op list threw out of the parser.
  EXPECT_THAT(ParseQuantSimConfig(R"({"supergroups": [{"op_list": ["Conv", 1]}]})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("expected op type names")));
}

// Every key a config may hold is applied or refused; none is accepted and ignored.
TEST(QuantSimTest, EncodingConstraintsFixAnOutputRange) {
  at::NoGradGuard no_grad;
  const Graph g = FoldedGraph("resnet18.pt");
  auto sim = SimWithConfig(g, R"({
    "defaults": {"ops": {"is_output_quantized": "True"}, "params": {"is_quantized": "True", "is_symmetric": "True"}},
    "op_type": {"Relu": {"encoding_constraints": {"min": 0.0, "max": 4.0}}},
    "supergroups": []
  })");
  ASSERT_THAT(sim, IsOk());
  for (const at::Tensor& b : Batches(2)) ASSERT_THAT((*sim)->ObserveBatch({b * 10}), IsOk());
  ASSERT_THAT((*sim)->FinishCalibration(), IsOk());
  const Quantizer& relu = (*sim)->activation_quantizers().at(g.FindNode("layer1.0.relu")->outputs[0]);
  EXPECT_TRUE(relu.frozen());
  EXPECT_DOUBLE_EQ(relu.encodings()[0].min, 0.0);
  EXPECT_NEAR(relu.encodings()[0].max, 4.0, 1e-6);
  // Calibrated quantizers elsewhere saw the data.
  EXPECT_FALSE((*sim)->activation_quantizers().at(g.FindNode("layer1.0.conv1")->outputs[0]).frozen());
  EXPECT_THAT(ParseQuantSimConfig(R"({"op_type": {"Relu": {"encoding_constraints": {"min": 1, "max": 1}}}})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("op_type.Relu.encoding_constraints: expected numbers min < max")));
}

TEST(QuantSimTest, IsInputQuantizedQuantizesAnOpsInputs) {
  const Graph g = FoldedGraph("resnet18.pt");
  auto sim = SimWithConfig(g, R"({
    "defaults": {"ops": {"is_output_quantized": "False"}, "params": {"is_quantized": "True"}},
    "op_type": {"Add": {"is_input_quantized": "True"}}
  })");
  ASSERT_THAT(sim, IsOk());
  EXPECT_GE((*sim)->FindActivation("layer1.0.add", true, 0), 0);
  EXPECT_GE((*sim)->FindActivation("layer1.0.add", true, 1), 0);
  EXPECT_EQ((*sim)->FindActivation("layer1.0.add", false, 0), -1);
  EXPECT_EQ((*sim)->FindActivation("layer1.0.conv1", false, 0), -1);
}

TEST(QuantSimTest, SupportedKernelsRefuseOtherBitwidths) {
  const Graph g = FoldedGraph("resnet18.pt");
  auto config = ParseQuantSimConfig(R"({
    "defaults": {"ops": {"is_output_quantized": "True"}, "params": {"is_quantized": "True", "is_symmetric": "True"},
                 "hw_version": "V73",
                 "supported_kernels": [{"activation": {"bitwidth": 8, "dtype": "int"}, "param": {"bitwidth": 8, "dtype": "int"}},
                                       {"activation": {"bitwidth": 16, "dtype": "int"}, "param": {"bitwidth": 8, "dtype": "int"}}]},
    "op_type": {"Gemm": {"supported_kernels": [{"activation": {"bitwidth": 16, "dtype": "float"}, "param": {"bitwidth": 16, "dtype": "float"}}]}}
  })");
  ASSERT_THAT(config, IsOk());
  QuantSimOptions o;
  o.config = *config;
  o.config.op_types.erase("Gemm");
  EXPECT_THAT(QuantSim::Create(g, o), IsOk());  // W8A8 is listed
  o.param_bitwidth = 4;
  EXPECT_THAT(QuantSim::Create(g, o), StatusIs(absl::StatusCode::kInvalidArgument,
                                               HasSubstr("layer conv1 (Conv) is quantized to W4A8, which its supported_kernels "
                                                         "do not list (W8A8, W8A16)")));
  o.param_bitwidth = 8;
  o.config = *config;  // fc's op type lists a float kernel only
  EXPECT_THAT(QuantSim::Create(g, o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("layer fc (Gemm) is quantized to W8A8, which its "
                                                                     "supported_kernels do not list (W16A16 (float))")));
  // Written back as read.
  const std::string written = QuantSimConfigToJson(*config);
  EXPECT_THAT(written, HasSubstr("\"hw_version\": \"V73\""));
  auto again = ParseQuantSimConfig(written);
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(QuantSimConfigToJson(*again), written);
  EXPECT_THAT(ParseQuantSimConfig(R"({"defaults": {"supported_kernels": [{"activation": {"bitwidth": 8, "dtype": "fp"},
                                                                             "param": {"bitwidth": 8}}]}})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("defaults.supported_kernels[0].activation.dtype")));
}

// Sees every value and keeps them, so the interpreter neither overwrites a tensor nor
// skips a node for the sim: the reference for what skipping must not change.
class KeepsValues : public ValueObserver {
 public:
  bool RetainsValues() const override { return true; }
};

// A ReLU, or a clip to [0, c] (ReLU6 as traced: hardtanh(x, 0, 6)), whose quantizer makes
// it an identity is skipped; the output is the same to the bit, inputs far beyond the
// calibration range included. A ceiling below the grid's top keeps the node.
TEST(QuantSimTest, SkippedRectifiersLeaveTheOutputUnchanged) {
  at::NoGradGuard no_grad;
  for (const std::string fixture : {"resnet18.pt", "mobilenet_v2.pt", "dw_separable_relu6.pt"}) {
    const Graph g = FoldedGraph(fixture);
    QuantSimOptions w8a8;
    w8a8.per_channel = true;
    auto sim = Calibrated(g, w8a8);
    int rectifiers = 0, skipped = 0;
    for (const Node* n : g.LiveNodes()) {
      if (n->kind != OpKind::kRelu && n->kind != OpKind::kClip) continue;
      ++rectifiers;
      skipped += sim->Bypasses(*n);
    }
    EXPECT_GT(rectifiers, 0) << fixture;
    EXPECT_EQ(skipped, rectifiers) << fixture;
    const at::Tensor x = Batches(2).back() * 3.0;
    KeepsValues keep;
    auto fast = sim->Forward(x);
    auto full = sim->Run({x}, &keep);
    ASSERT_THAT(fast, IsOk());
    ASSERT_THAT(full, IsOk());
    EXPECT_TRUE(at::equal(*fast, full->toTensor())) << fixture;
  }

  const Graph g = FoldedGraph("dw_separable_relu6.pt");
  auto sim = Calibrated(g, QuantSimOptions{});
  const Node* clip = nullptr;
  for (const Node* n : g.LiveNodes()) {
    if (n->kind == OpKind::kClip && !clip) clip = n;
  }
  ASSERT_NE(clip, nullptr);
  QuantSpec spec;
  spec.symmetric = false;
  ASSERT_THAT(sim->SetActivationEncodings(clip->outputs[0], {ComputeEncoding(0.0, 12.0, spec)}, true), IsOk());
  EXPECT_FALSE(sim->Bypasses(*clip)) << "a grid reaching past the ceiling needs the clip";
  const at::Tensor x = Batches(2).back() * 3.0;
  KeepsValues keep;
  EXPECT_TRUE(at::equal(*sim->Forward(x), sim->Run({x}, &keep)->toTensor()));
}

// Calibration clamps a ReLU's or ReLU6's input as it bins it (one pass, the op skipped):
// every encoding equals the one from the same quantizers observing the floating-point
// model's values separately, so downstream layers saw exactly the clipped values.
TEST(QuantSimTest, CalibrationThatFusesClipsWithTheirHistogramsMatchesSeparateObservation) {
  at::NoGradGuard no_grad;
  for (const std::string fixture : {"resnet18.pt", "mobilenet_v2.pt", "dw_separable_relu6.pt"}) {
    const Graph g = FoldedGraph(fixture);
    for (const CalibrationMethod method : {CalibrationMethod::kSqnr, CalibrationMethod::kMinMax}) {
      QuantSimOptions o;
      o.activation_method = method;
      auto created = QuantSim::Create(g, o);
      ASSERT_THAT(created, IsOk());
      QuantSim& sim = **created;
      std::map<int, Quantizer> separate = sim.activation_quantizers();

      struct Observer : ValueObserver {
        std::map<int, Quantizer>* quantizers;
        void OnValue(const Value& value, c10::IValue& v) override {
          if (auto it = quantizers->find(value.id); it != quantizers->end() && v.isTensor()) {
            it->second.Observe(v.toTensor());
          }
        }
        bool RetainsValues() const override { return true; }
      } observer;
      observer.quantizers = &separate;
      Interpreter plain(g);
      for (const at::Tensor& b : Batches(3)) {
        const at::Tensor batch = b * 2.0;  // wider than the first batch: the ranges grow
        ASSERT_THAT(sim.ObserveBatch({batch}), IsOk());
        ASSERT_THAT(plain.Run({batch}, &observer), IsOk());
      }
      ASSERT_THAT(sim.FinishCalibration(), IsOk());
      int compared = 0;
      for (const auto& [vid, q] : sim.activation_quantizers()) {
        ASSERT_THAT(separate.at(vid).ComputeFromStatistics(), IsOk());
        const Encoding& a = q.encodings().at(0);
        const Encoding& b = separate.at(vid).encodings().at(0);
        EXPECT_EQ(a.min, b.min) << fixture << " " << g.values[vid].name;
        EXPECT_EQ(a.max, b.max) << fixture << " " << g.values[vid].name;
        EXPECT_EQ(a.scale, b.scale) << fixture << " " << g.values[vid].name;
        ++compared;
      }
      EXPECT_GT(compared, 3) << fixture;
    }
  }
}

// Cross-layer equalization leaves MobileNetV2's ReLU6s as clamps with a ceiling per
// channel: one is skipped exactly when its lowest ceiling reaches the grid's top, and the
// output stays the same to the bit.
TEST(QuantSimTest, PerChannelClipsAreSkippedOnlyBelowTheirLowestCeiling) {
  at::NoGradGuard no_grad;
  Graph g = FoldedGraph("mobilenet_v2.pt");
  ASSERT_THAT(CrossLayerEqualize(g, CleOptions{/*high_bias_absorption=*/false}), IsOk());
  QuantSimOptions w8a8;
  w8a8.per_channel = true;
  auto sim = Calibrated(g, w8a8);
  int per_channel = 0, skipped = 0, expected = 0;
  for (const Node* n : g.LiveNodes()) {
    if (n->kind != OpKind::kClip || n->Param("clip_max") < 0) continue;
    const at::Tensor ceiling = g.values[n->Param("clip_max")].constant->toTensor();
    if (ceiling.numel() < 2) continue;
    ++per_channel;
    const Encoding& e = sim->activation_quantizers().at(n->outputs[0]).encodings()[0];
    const float top = ceiling.min().item<float>() * (1.0f / static_cast<float>(e.scale));
    expected += e.offset == 0 && top >= static_cast<float>(e.quant_max()) - 0.25f;
    skipped += sim->Bypasses(*n);
  }
  EXPECT_GT(per_channel, 10);
  EXPECT_EQ(skipped, expected);
  std::printf("%d of %d per-channel clips skipped as calibrated\n", skipped, per_channel);

  // Calibration puts the grid's top near the highest ceiling, so none is skipped above;
  // grids set by hand on the first such clip: one ending below its lowest ceiling (skipped),
  // one ending between the lowest and the highest (kept). Both give the same output as
  // running every node.
  const Node* clip = nullptr;
  for (const Node* n : g.LiveNodes()) {
    if (!clip && n->kind == OpKind::kClip && n->Param("clip_max") >= 0 &&
        g.values[n->Param("clip_max")].constant->toTensor().numel() > 1) {
      clip = n;
    }
  }
  ASSERT_NE(clip, nullptr);
  const at::Tensor ceiling = g.values[clip->Param("clip_max")].constant->toTensor();
  const double lowest = ceiling.min().item<double>(), highest = ceiling.max().item<double>();
  ASSERT_GT(highest, 1.2 * lowest);
  QuantSpec spec;
  spec.symmetric = false;
  const at::Tensor x = Batches(2).back() * 3.0;
  for (const double top : {0.9 * lowest, 0.5 * (lowest + highest)}) {
    ASSERT_THAT(sim->SetActivationEncodings(clip->outputs[0], {ComputeEncoding(0.0, top, spec)}, true), IsOk());
    EXPECT_EQ(sim->Bypasses(*clip), top < lowest) << "grid top " << top << ", ceilings " << lowest << " to " << highest;
    KeepsValues keep;
    auto fast = sim->Forward(x);
    auto full = sim->Run({x}, &keep);
    ASSERT_THAT(fast, IsOk());
    ASSERT_THAT(full, IsOk());
    EXPECT_TRUE(at::equal(*fast, full->toTensor())) << "grid top " << top;
  }
}

// With kernels = kOnnxRuntimeInt8 every conv, add and global average pool of ResNet18
// between 8-bit grids runs as an int8 kernel. A conv's output is its integer arithmetic,
// recomputed here in int64 from the layer's quantized input and weight: exact
// accumulation, the bias rounded to int32 at input scale x weight scale, requantization
// by float32(x_scale * w_scale) / y_scale, rounded half to even. The exported TorchScript
// model computes the same, bit for bit, in stock LibTorch.
TEST(QuantSimTest, OnnxRuntimeInt8KernelsAreTheKernelsIntegerArithmetic) {
  at::NoGradGuard no_grad;
  const Graph g = FoldedGraph("resnet18.pt");
  QuantSimOptions o;
  o.per_channel = true;
  o.kernels = QuantSimOptions::Kernels::kOnnxRuntimeInt8;
  auto sim = Calibrated(g, o);
  const std::map<int, IntegerKernel> kernels = sim->IntegerKernels();
  std::map<IntegerKernel::Kind, int> kinds;
  for (const auto& [id, k] : kernels) ++kinds[k.kind];
  int convs = 0, adds = 0;
  for (const Node* n : g.LiveNodes()) {
    convs += n->kind == OpKind::kConv;
    adds += n->kind == OpKind::kAdd;
  }
  EXPECT_EQ(kinds[IntegerKernel::Kind::kConv], convs);
  EXPECT_EQ(kinds[IntegerKernel::Kind::kAdd], adds);
  EXPECT_EQ(kinds[IntegerKernel::Kind::kGlobalAveragePool], 1);
  EXPECT_GT(convs, 10);

  const at::Tensor x = Batches(1)[0];
  int checked = 0;
  for (const auto& [id, k] : kernels) {
    const Node& n = g.nodes[id];
    if (k.kind != IntegerKernel::Kind::kConv || (checked++ % 4) != 0) continue;
    ValueCapture input(n.inputs[0]), output(k.output_value);
    ASSERT_THAT(sim->Run({x}, &input), IsOk());
    ASSERT_THAT(sim->Run({x}, &output), IsOk());
    const at::Tensor in = input.Take(), got = output.Take();
    ASSERT_TRUE(in.defined() && got.defined()) << n.name;

    const Quantizer& wq = sim->param_quantizers().at(n.Param("weight"));
    const at::Tensor w = g.values[n.Param("weight")].constant->toTensor();
    const int64_t out_channels = w.size(0), kh = w.size(2), kw = w.size(3);
    std::vector<float> w_scales;
    for (const Encoding& e : wq.encodings()) w_scales.push_back(static_cast<float>(e.scale));
    const at::Tensor w_int = at::round(wq.Apply(w) / at::tensor(w_scales).view({-1, 1, 1, 1})).to(at::kLong);
    const at::Tensor x_int = at::round(in * k.inputs[0].inv_scale).to(at::kLong);
    const auto stride = g.values[n.inputs[3]].constant->toIntVector();
    const auto padding = g.values[n.inputs[4]].constant->toIntVector();
    // im2col copies values, so float64 columns hold the integers exactly; the products
    // and sums are int64.
    const at::Tensor cols = at::im2col(x_int.to(at::kDouble), {kh, kw}, {1, 1}, padding, stride).to(at::kLong);
    at::Tensor acc = at::matmul(w_int.reshape({out_channels, -1}), cols);  // [N, O, L]
    const float sx = k.inputs[0].scale, sy = k.output.scale;
    const at::Tensor b = g.values[n.Param("bias")].constant->toTensor();
    std::vector<int64_t> bias(out_channels);
    std::vector<float> multiplier(out_channels);
    for (int64_t c = 0; c < out_channels; ++c) {
      const float bias_scale = sx * w_scales[c];
      bias[c] = static_cast<int64_t>(std::nearbyint(b[c].item<float>() / bias_scale));
      multiplier[c] = bias_scale / sy;
    }
    acc = acc + at::tensor(bias).view({1, -1, 1});
    at::Tensor v = acc.to(at::kFloat) * at::tensor(multiplier).view({1, -1, 1});
    v = at::round(at::clamp(v, -k.output.zero_point, 255 - k.output.zero_point));
    const at::Tensor expected = (v * sy).view(got.sizes());
    EXPECT_TRUE(at::equal(got, expected)) << n.name << ": " << (got - expected).abs().max().item<double>() / sy
                                          << " output steps apart";
  }
  EXPECT_GE(checked, convs);

  // The fake-quantize simulation differs on a few values; the exported file follows the
  // kernels.
  const at::Tensor int8 = *sim->Forward(x);
  QuantSimOptions fake = o;
  fake.kernels = QuantSimOptions::Kernels::kFakeQuant;
  auto fake_sim = Calibrated(g, fake);
  const at::Tensor fake_quant = *fake_sim->Forward(x);
  EXPECT_FALSE(at::equal(int8, fake_quant));
  std::printf("int8 kernels vs fake-quant output: %.4f%% of values differ\n",
              100.0 * int8.ne(fake_quant).to(at::kFloat).mean().item<double>());
  ::qopt::testing::TempDir dir;
  ASSERT_THAT(ExportTorchScript(g, sim.get(), dir.File("model.pt")), IsOk());
  torch::jit::Module m = torch::jit::load(dir.File("model.pt"));
  const at::Tensor file = m.forward({x}).toTensor();
  EXPECT_TRUE(at::equal(file, int8)) << "max diff " << (file - int8).abs().max().item<double>();
}

TEST(QuantSimTest, RunBeforeCalibrationIsAnError) {
  const Graph g = FoldedGraph("small_scripted.pt");
  auto sim = QuantSim::Create(g, {});
  ASSERT_THAT(sim, IsOk());
  EXPECT_THAT((*sim)->Forward(Batches(1)[0]),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("calibrate first")));
}

TEST(QuantSimTest, FrozenEncodingsAreKeptThroughCalibration) {
  at::NoGradGuard no_grad;
  const Graph g = FoldedGraph("small_scripted.pt");
  auto first = Calibrated(g, {}, 1);
  const std::string json = EncodingsToJson(*first);

  auto second = QuantSim::Create(g, {});
  ASSERT_THAT(second, IsOk());
  ASSERT_THAT(LoadEncodingsJson(**second, json, /*freeze=*/true), IsOk());
  // Calibrate on scaled data: unfrozen encodings would widen.
  for (const at::Tensor& b : Batches(2)) ASSERT_THAT((*second)->ObserveBatch({b * 10}), IsOk());
  ASSERT_THAT((*second)->FinishCalibration(), IsOk());
  EXPECT_EQ(EncodingsToJson(**second), json);
}

// The quantization plan: a layer's own bitwidths from the config, and changes from code
// whose encodings come from calibration's statistics without another pass.
TEST(QuantPlan, ConfigGivesALayerItsOwnBitwidths) {
  const Graph g = FoldedGraph("resnet18.pt");
  auto config = ParseQuantSimConfig(R"({
    "defaults": {"ops": {"is_output_quantized": "True"}, "params": {"is_quantized": "True", "is_symmetric": "True"}},
    "params": {"bias": {"is_quantized": "False"}},
    "layers": {"fc": {"bitwidth": 4, "params": {"weight": {"bitwidth": 3}}}}
  })");
  ASSERT_THAT(config, IsOk());
  QuantSimOptions o;
  o.config = *config;
  auto sim = Calibrated(g, o);
  const Node* fc = g.FindNode("fc");
  EXPECT_EQ(sim->param_quantizers().at(fc->Param("weight")).spec().bitwidth, 3);
  EXPECT_EQ(sim->activation_quantizers().at(fc->outputs[0]).spec().bitwidth, 4);
  const Node* conv1 = g.FindNode("conv1");
  EXPECT_EQ(sim->param_quantizers().at(conv1->Param("weight")).spec().bitwidth, 8);
  EXPECT_THAT(ParseQuantSimConfig(R"({"layers": {"fc": {"bitwidth": 17}}})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("layers.fc.bitwidth: expected an integer in 2..16")));
}

TEST(QuantPlan, ChangedQuantizersMatchAFreshCalibrationWithoutOne) {
  const Graph g = FoldedGraph("resnet18.pt");
  auto sim = Calibrated(g, QuantSimOptions{});
  const Node* fc = g.FindNode("fc");
  const int weight = fc->Param("weight"), output = fc->outputs[0];
  ASSERT_THAT(sim->ChangeQuantizer(weight, {4, std::nullopt, true, std::nullopt}), IsOk());
  ASSERT_THAT(sim->ChangeQuantizer(output, {6, true, std::nullopt, std::nullopt}), IsOk());

  auto config = ParseQuantSimConfig(R"({
    "defaults": {"ops": {"is_output_quantized": "True"}, "params": {"is_quantized": "True", "is_symmetric": "True"}},
    "params": {"bias": {"is_quantized": "False"}},
    "supergroups": [{"op_list": ["Conv", "Relu"]}, {"op_list": ["Add", "Relu"]}],
    "model_input": {"is_input_quantized": "True"},
    "model_output": {"is_output_quantized": "True"},
    "layers": {"fc": {"bitwidth": 6, "is_symmetric": "True", "per_channel_quantization": "True",
                      "params": {"weight": {"bitwidth": 4}}}}
  })");
  ASSERT_THAT(config, IsOk());
  QuantSimOptions o;
  o.config = *config;
  auto fresh = Calibrated(g, o);
  for (int vid : {weight, output}) {
    const auto& mine = vid == weight ? sim->param_quantizers().at(vid) : sim->activation_quantizers().at(vid);
    const auto& theirs = vid == weight ? fresh->param_quantizers().at(vid) : fresh->activation_quantizers().at(vid);
    ASSERT_EQ(mine.encodings().size(), theirs.encodings().size()) << g.values[vid].name;
    for (size_t c = 0; c < mine.encodings().size(); ++c) {
      EXPECT_EQ(mine.encodings()[c].bitwidth, theirs.encodings()[c].bitwidth);
      EXPECT_DOUBLE_EQ(mine.encodings()[c].scale, theirs.encodings()[c].scale) << g.values[vid].name << " channel " << c;
      EXPECT_EQ(mine.encodings()[c].offset, theirs.encodings()[c].offset);
    }
  }
  const at::Tensor x = Batches(1).front();
  auto changed = sim->Forward(x);
  auto expected = fresh->Forward(x);
  ASSERT_THAT(changed, IsOk());
  ASSERT_THAT(expected, IsOk());
  EXPECT_TRUE(at::allclose(*changed, *expected)) << "same plan, same output";

  ASSERT_THAT(sim->ChangeQuantizer(output, {std::nullopt, std::nullopt, std::nullopt, false}), IsOk());
  auto off = sim->Forward(x);
  ASSERT_THAT(off, IsOk());
  EXPECT_FALSE(at::allclose(*off, *changed)) << "switching the output quantizer off changes the output";
  EXPECT_THAT(sim->ChangeQuantizer(output, {1, std::nullopt, std::nullopt, std::nullopt}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bitwidth")));
  EXPECT_THAT(sim->ChangeQuantizer(output, {std::nullopt, std::nullopt, true, std::nullopt}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("per-channel")));
  EXPECT_THAT(sim->ChangeQuantizer(fc->inputs[0], {}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("has no quantizer")));
}

}  // namespace
}  // namespace qopt
