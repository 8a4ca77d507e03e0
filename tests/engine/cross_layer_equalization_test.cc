// Cross-layer equalization and high-bias absorption on real TorchScript fixtures: the
// floating-point output stays the same, weight ranges come out equal, ReLU6 chains keep
// their function through per-channel clips, and absorption is exact where it should be.
#include "passes/cross_layer_equalization.h"

#include <algorithm>

#include <ATen/ATen.h>

#include "data/tensor_file.h"
#include "export/torchscript_export.h"
#include "ir/import.h"
#include "ir/interpreter.h"
#include "ir/verify.h"
#include "passes/batch_norm_fold.h"
#include "test_util.h"

#include <torch/script.h>

namespace qopt {
namespace {

using ::qopt::testing::Fixture;
using ::qopt::testing::IsOk;

at::Tensor RunGraph(const Graph& g, const at::Tensor& x) {
  Interpreter interpreter(g);
  auto out = interpreter.Forward(x);
  EXPECT_THAT(out, IsOk());
  return out.ok() ? *out : at::Tensor();
}

double RelativeError(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).norm() / b.norm()).item<double>();
}

at::Tensor Weight(const Graph& g, const std::string& layer) {
  const Node* n = g.FindNode(layer);
  EXPECT_NE(n, nullptr) << layer;
  return g.values[n->Param("weight")].constant->toTensor();
}

// Largest |w| per channel along `dim`.
at::Tensor Range(const at::Tensor& w, int dim) {
  at::Tensor t = w.abs().transpose(0, dim).contiguous();
  return std::get<0>(t.reshape({t.size(0), -1}).max(1));
}

// A fixture with its batch norms folded, and 8 calibration inputs.
struct Folded {
  Graph g;
  at::Tensor x;
};

Folded LoadFolded(const std::string& fixture) {
  auto g = ImportTorchScript(Fixture(fixture));
  EXPECT_THAT(g, IsOk());
  auto data = LoadNpy(Fixture("calib.npy"));
  EXPECT_THAT(data, IsOk());
  if (!g.ok() || !data.ok()) return {};
  EXPECT_THAT(FoldBatchNorms(*g), IsOk());
  return {std::move(*g), data->slice(0, 0, 8)};
}

class CleFixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CleFixtureTest, FloatOutputUnchanged) {
  at::NoGradGuard no_grad;
  auto [graph, x] = LoadFolded(GetParam());
  ASSERT_FALSE(graph.nodes.empty());
  Graph* g = &graph;
  const at::Tensor before = RunGraph(*g, x);

  auto report = CrossLayerEqualize(*g, CleOptions{/*high_bias_absorption=*/false});
  ASSERT_THAT(report, IsOk());
  EXPECT_FALSE(report->chains.empty()) << GetParam();
  ASSERT_EQ(report->scale_ranges.size(), report->chains.size());
  for (size_t c = 0; c < report->chains.size(); ++c) {
    EXPECT_NE(report->scale_ranges[c], std::make_pair(1.0, 1.0)) << GetParam() << ": " << report->chains[c].front();
  }
  const at::Tensor after = RunGraph(*g, x);
  EXPECT_LE(RelativeError(after, before), 1e-4) << GetParam();
  EXPECT_LE((after - before).abs().max().item<double>(), 1e-4 * before.abs().max().item<double>());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CleFixtureTest,
                         ::testing::Values("resnet18.pt", "mobilenet_v2.pt", "googlenet.pt"));

// A depthwise-separable block whose input also feeds a skip: its chain starts at the
// depthwise conv, which pairs with the pointwise one (through ReLU6 by per-channel clips).
class DepthwiseFirstTest : public ::testing::TestWithParam<std::string> {};

TEST_P(DepthwiseFirstTest, ChainStartingAtADepthwiseConvIsEqualized) {
  at::NoGradGuard no_grad;
  auto [graph, x] = LoadFolded(GetParam());
  ASSERT_FALSE(graph.nodes.empty());
  Graph* g = &graph;
  const at::Tensor before = RunGraph(*g, x);
  const at::Tensor dw = Weight(*g, "down.0").clone(), pw = Weight(*g, "down_pw.0").clone();

  auto report = CrossLayerEqualize(*g, CleOptions{/*high_bias_absorption=*/false});
  ASSERT_THAT(report, IsOk());
  const std::vector<std::string> chain = {"down.0", "down_pw.0"};
  const auto it = std::find(report->chains.begin(), report->chains.end(), chain);
  ASSERT_NE(it, report->chains.end()) << GetParam();
  const auto [lo, hi] = report->scale_ranges[it - report->chains.begin()];
  EXPECT_LT(lo, 0.99) << GetParam();
  EXPECT_GT(hi, 1.01) << GetParam();
  // Changed weights, ranges equal per channel, the same function.
  EXPECT_FALSE(at::equal(Weight(*g, "down.0"), dw));
  EXPECT_FALSE(at::equal(Weight(*g, "down_pw.0"), pw));
  EXPECT_TRUE(at::allclose(Range(Weight(*g, "down.0"), 0), Range(Weight(*g, "down_pw.0"), 1), 1e-4, 1e-6));
  const at::Tensor after = RunGraph(*g, x);
  EXPECT_LE((after - before).abs().max().item<double>(), 1e-4 * before.abs().max().item<double>()) << GetParam();
  // Every chain the report names was changed by it.
  for (size_t c = 0; c < report->chains.size(); ++c) {
    EXPECT_NE(report->scale_ranges[c], std::make_pair(1.0, 1.0)) << report->chains[c].front();
  }
  if (GetParam() == "dw_separable_relu6.pt") {
    EXPECT_THAT(report->clipped_relu6, ::testing::Contains("down.2"));
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, DepthwiseFirstTest, ::testing::Values("dw_separable_relu6.pt", "dw_separable_relu.pt"));

TEST(CrossLayerEqualization, EqualizesConvPairRanges) {
  auto g = ImportTorchScript(Fixture("resnet18.pt"));
  ASSERT_THAT(g, IsOk());
  ASSERT_THAT(FoldBatchNorms(*g), IsOk());
  const at::Tensor r1_before = Range(Weight(*g, "layer1.0.conv1"), 0);
  const at::Tensor r2_before = Range(Weight(*g, "layer1.0.conv2"), 1);
  ASSERT_GT((r1_before / r2_before).max().item<double>() / (r1_before / r2_before).min().item<double>(), 2.0)
      << "the fixture's ranges should differ before equalization";
  auto report = CrossLayerEqualize(*g);
  ASSERT_THAT(report, IsOk());
  bool found = false;
  for (const auto& chain : report->chains) {
    found |= chain == std::vector<std::string>{"layer1.0.conv1", "layer1.0.conv2"};
  }
  EXPECT_TRUE(found) << "conv1 -> relu -> conv2 is a chain; conv2 feeds the residual add";
  const at::Tensor r1 = Range(Weight(*g, "layer1.0.conv1"), 0);
  const at::Tensor r2 = Range(Weight(*g, "layer1.0.conv2"), 1);
  EXPECT_TRUE(at::allclose(r1, r2, 1e-4, 1e-7)) << (r1 - r2).abs().max();
  // The geometric mean of the two ranges is kept.
  EXPECT_TRUE(at::allclose(r1 * r2, r1_before * r2_before, 1e-3, 1e-9));
}

TEST(CrossLayerEqualization, DepthwiseTriplesAndRelu6Clips) {
  auto g = ImportTorchScript(Fixture("mobilenet_v2.pt"));
  ASSERT_THAT(g, IsOk());
  ASSERT_THAT(FoldBatchNorms(*g), IsOk());
  auto report = CrossLayerEqualize(*g, CleOptions{/*high_bias_absorption=*/false});
  ASSERT_THAT(report, IsOk());
  // features.3: expand 1x1 conv -> ReLU6 -> depthwise 3x3 -> ReLU6 -> project 1x1 conv (its
  // output feeds a residual add, so the chain ends there).
  const std::vector<std::string> triple = {"features.3.conv.0.0", "features.3.conv.1.0", "features.3.conv.2"};
  bool found = false;
  std::string chains;
  for (const auto& chain : report->chains) {
    found |= chain == triple;
    for (const auto& l : chain) chains += l + " ";
    chains += "| ";
  }
  EXPECT_TRUE(found) << chains;
  const at::Tensor r1 = Range(Weight(*g, triple[0]), 0);
  const at::Tensor r2 = Range(Weight(*g, triple[1]), 0);
  const at::Tensor r3 = Range(Weight(*g, triple[2]), 1);
  EXPECT_TRUE(at::allclose(r1, r2, 1e-4, 1e-7)) << (r1 - r2).abs().max();
  EXPECT_TRUE(at::allclose(r2, r3, 1e-4, 1e-7)) << (r2 - r3).abs().max();
  EXPECT_FALSE(report->clipped_relu6.empty());
  const Node* relu6 = g->FindNode(report->clipped_relu6.front());
  ASSERT_NE(relu6, nullptr);
  EXPECT_EQ(relu6->op, "aten::clamp") << "the clip is an ordinary op";
  ASSERT_GE(relu6->Param("clip_max"), 0);
  const at::Tensor clip = g->values[relu6->Param("clip_max")].constant->toTensor();
  EXPECT_GT(clip.max().item<double>() / clip.min().item<double>(), 1.5) << "clips differ per channel";
}

TEST(CrossLayerEqualization, ExportedModelRunsInStockTorch) {
  auto g = ImportTorchScript(Fixture("mobilenet_v2.pt"));
  ASSERT_THAT(g, IsOk());
  auto data = LoadNpy(Fixture("calib.npy"));
  ASSERT_THAT(data, IsOk());
  const at::Tensor x = data->slice(0, 0, 4);
  at::NoGradGuard no_grad;
  ASSERT_THAT(FoldBatchNorms(*g), IsOk());
  ASSERT_THAT(CrossLayerEqualize(*g), IsOk());
  ASSERT_THAT(Verify(*g), IsOk());
  const at::Tensor ours = RunGraph(*g, x);
  qopt::testing::TempDir dir;
  ASSERT_THAT(ExportTorchScript(*g, nullptr, dir.File("cle.pt")), IsOk());
  torch::jit::Module m = torch::jit::load(dir.File("cle.pt"));
  const at::Tensor theirs = m.forward({x}).toTensor();
  EXPECT_LE(RelativeError(theirs, ours), 1e-5);
}

class HighBiasTest : public ::testing::TestWithParam<std::string> {};

TEST_P(HighBiasTest, AbsorptionIsExactWhenChannelsStayAboveTheShift) {
  auto g = ImportTorchScript(Fixture(GetParam()));
  ASSERT_THAT(g, IsOk());
  at::NoGradGuard no_grad;
  const at::Tensor x = at::rand({64, 8}, at::TensorOptions().dtype(at::kFloat)) * 2 - 1;
  const at::Tensor reference = RunGraph(*g, x);
  ASSERT_THAT(FoldBatchNorms(*g), IsOk());
  const at::Tensor fc1_bias = g->values[g->FindNode("fc1")->Param("bias")].constant->toTensor().clone();

  auto report = CrossLayerEqualize(*g);
  ASSERT_THAT(report, IsOk());
  ASSERT_EQ(report->absorbed.size(), 1u);
  EXPECT_EQ(report->absorbed[0], std::make_pair(std::string("fc1"), std::string("fc2")));
  const at::Tensor after = RunGraph(*g, x);
  EXPECT_LE(RelativeError(after, reference), 1e-5) << GetParam();
  // fc1's bias gave up beta - 3 gamma = 2.5 per channel (before equalization's scaling),
  // so its mean output dropped by 2.5 / s: at least a real shift.
  const at::Tensor moved = fc1_bias - g->values[g->FindNode("fc1")->Param("bias")].constant->toTensor();
  EXPECT_GT(moved.min().item<double>(), 0.1);
}

INSTANTIATE_TEST_SUITE_P(Activations, HighBiasTest,
                         ::testing::Values("high_bias_relu.pt", "high_bias_relu6.pt"));

TEST(HighBiasAbsorption, ChangesLittleOnARealNetwork) {
  auto g = ImportTorchScript(Fixture("mobilenet_v2.pt"));
  ASSERT_THAT(g, IsOk());
  auto data = LoadNpy(Fixture("calib.npy"));
  ASSERT_THAT(data, IsOk());
  const at::Tensor x = data->slice(0, 0, 8);
  at::NoGradGuard no_grad;
  ASSERT_THAT(FoldBatchNorms(*g), IsOk());
  const at::Tensor before = RunGraph(*g, x);
  auto report = CrossLayerEqualize(*g);
  ASSERT_THAT(report, IsOk());
  const at::Tensor after = RunGraph(*g, x);
  // Absorption is exact only above the 3-sigma shift and away from zero padding.
  EXPECT_LE(RelativeError(after, before), 0.05) << report->absorbed.size() << " pairs absorbed";
}

}  // namespace
}  // namespace qopt
