// Editing the IR through the rewriter on a real TorchScript model: every 3x3 convolution of
// the ResNet18 fixture becomes a pair of convolutions (3x1 then 1x3) or a convolution and
// a per-channel scale; the edited graph verifies, computes what the original computed, and
// its TorchScript export computes the same in stock LibTorch.
#include <ATen/ATen.h>
#include <torch/script.h>

#include "data/tensor_file.h"
#include "export/encodings_json.h"
#include "export/torchscript_export.h"
#include "ir/import.h"
#include "ir/interpreter.h"
#include "ir/rewriter.h"
#include "ir/shape_inference.h"
#include "ir/verify.h"
#include "passes/batch_norm_fold.h"
#include "passes/output_channels.h"
#include "passes/pass_util.h"
#include "quant/quantsim.h"
#include "test_util.h"

namespace qopt {
namespace {

using ::qopt::testing::Fixture;
using ::qopt::testing::IsOk;
using ::qopt::testing::StatusIs;
using ::testing::HasSubstr;

double RelativeError(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).norm() / b.norm()).item<double>();
}

at::Tensor RunGraph(const Graph& g, const at::Tensor& x) {
  auto out = Interpreter(g).Forward(x);
  EXPECT_THAT(out, IsOk());
  return out.ok() ? *out : at::Tensor();
}

at::Tensor Input() {
  auto data = LoadNpy(Fixture("calib.npy"));
  EXPECT_THAT(data, IsOk());
  return data->slice(0, 0, 4);
}

at::Tensor ParamOf(const Graph& g, const Node& n, const char* role) {
  return g.values[n.Param(role)].constant->toTensor();
}

std::vector<int64_t> IntsOf(const Graph& g, const Node& n, int slot) {
  return g.values[n.inputs[slot]].constant->toIntVector();
}

// 3x3 convolutions with one group and unit dilation: stride, padding slots 3 and 4.
std::vector<Node*> ThreeByThreeConvs(Graph& g) {
  std::vector<Node*> out;
  for (const Node* n : g.LiveNodes()) {
    if (n->kind != OpKind::kConv || n->Param("weight") < 0) continue;
    const at::Tensor w = ParamOf(g, *n, "weight");
    if (w.dim() == 4 && w.size(2) == 3 && w.size(3) == 3 && ConvGroups(g, *n) == 1 && IntsOf(g, *n, 5) == std::vector<int64_t>{1, 1}) {
      out.push_back(g.FindNode(n->name));
    }
  }
  return out;
}

// aten::conv2d(x, weight, bias, stride, padding, dilation=1, groups=1) with its weight and
// bias as the new node's parameters.
absl::StatusOr<Node*> Conv2d(Rewriter& rw, int x, const at::Tensor& w, std::optional<at::Tensor> b,
                             std::vector<int64_t> stride, std::vector<int64_t> padding, const std::string& name) {
  const int wv = rw.Parameter(w);
  const int bv = b ? rw.Parameter(*b) : rw.Constant(c10::IValue());
  auto conv = rw.Create("aten::conv2d",
                        {x, wv, bv, rw.Constant(stride), rw.Constant(padding), rw.Constant(std::vector<int64_t>{1, 1}),
                         rw.Constant(int64_t{1})},
                        name);
  if (!conv.ok()) return conv.status();
  rw.Own(**conv, "weight", 1);
  if (b) rw.Own(**conv, "bias", 2);
  return conv;
}

// Makes every 3x3 convolution's weight rank-limited and exactly factorised: W[o,i,kh,kw] =
// sum_m H[o,m,kw] V[m,i,kh]. Then replaces each by a 3x1 convolution with V (stride and
// padding vertical only) followed by a 1x3 convolution with H (horizontal only).
void SplitConvolutions(Graph& g, const at::Tensor& x, at::Tensor& reference) {
  at::manual_seed(7);
  std::vector<std::pair<at::Tensor, at::Tensor>> factors;
  for (Node* n : ThreeByThreeConvs(g)) {
    const at::Tensor w = ParamOf(g, *n, "weight");
    const int64_t out = w.size(0), in = w.size(1), mid = std::min(in, out);
    const double scale = w.abs().max().item<double>();
    const at::Tensor v = at::randn({mid, in, 3, 1}) * std::sqrt(scale / 3);
    const at::Tensor h = at::randn({out, mid, 1, 3}) * std::sqrt(scale / mid);
    const at::Tensor separable = at::einsum("omw,mih->oihw", {h.squeeze(2), v.squeeze(3)});
    g.SetParam(*n, "weight", 1, separable.contiguous());
    factors.emplace_back(v, h);
  }
  reference = RunGraph(g, x);
  size_t k = 0;
  for (Node* n : ThreeByThreeConvs(g)) {
    const auto [v, h] = factors[k++];
    const auto stride = IntsOf(g, *n, 3), padding = IntsOf(g, *n, 4);
    const std::optional<at::Tensor> bias =
        n->Param("bias") >= 0 ? std::optional<at::Tensor>(ParamOf(g, *n, "bias")) : std::nullopt;
    Rewriter rw(g);
    rw.SetInsertionPointBefore(*n);
    auto vertical = Conv2d(rw, n->inputs[0], v, std::nullopt, {stride[0], 1}, {padding[0], 0}, n->name + ".vertical");
    ASSERT_THAT(vertical, IsOk());
    auto horizontal = Conv2d(rw, (*vertical)->outputs[0], h, bias, {1, stride[1]}, {0, padding[1]}, n->name + ".horizontal");
    ASSERT_THAT(horizontal, IsOk());
    ASSERT_THAT(rw.Replace(*n, {(*horizontal)->outputs[0]}), IsOk());
  }
  ASSERT_GT(k, 10u) << "ResNet18 has 16 3x3 convolutions";
}

void ExpectExportComputes(const Graph& g, const at::Tensor& x, const at::Tensor& expected) {
  qopt::testing::TempDir dir;
  ASSERT_THAT(ExportTorchScript(g, nullptr, dir.File("edited.pt")), IsOk());
  torch::jit::Module m = torch::jit::load(dir.File("edited.pt"));
  const at::Tensor theirs = m.forward({x}).toTensor();
  EXPECT_LE(RelativeError(theirs, expected), 1e-5);
}

TEST(GraphEdit, ConvolutionBecomesAPairOfSeparableConvolutions) {
  auto g = ImportTorchScript(Fixture("resnet18.pt"));
  ASSERT_THAT(g, IsOk());
  at::NoGradGuard no_grad;
  const at::Tensor x = Input();
  at::Tensor reference;
  SplitConvolutions(*g, x, reference);
  ASSERT_THAT(Verify(*g), IsOk());
  EXPECT_TRUE(ThreeByThreeConvs(*g).empty());
  EXPECT_NE(g->FindNode("layer1.0.conv1.vertical"), nullptr);
  const at::Tensor edited = RunGraph(*g, x);
  EXPECT_LE(RelativeError(edited, reference), 1e-5);
  ExpectExportComputes(*g, x, edited);

  // Quantized, the new layers get quantizers like imported ones, and both exporters
  // write them: encodings by their names, TorchScript with their fake-quantize ops.
  auto sim = QuantSim::Create(*g, QuantSimOptions{});
  ASSERT_THAT(sim, IsOk());
  ASSERT_THAT((*sim)->ObserveBatch({x}), IsOk());
  ASSERT_THAT((*sim)->FinishCalibration(), IsOk());
  const std::string encodings = EncodingsToJson(**sim);
  EXPECT_NE(encodings.find("layer1.0.conv1.vertical.weight"), std::string::npos);
  EXPECT_NE(encodings.find("layer1.0.conv1.horizontal.weight"), std::string::npos);
  auto simulated = (*sim)->Forward(x);
  ASSERT_THAT(simulated, IsOk());
  qopt::testing::TempDir dir;
  ASSERT_THAT(ExportTorchScript(*g, sim->get(), dir.File("q.pt")), IsOk());
  const at::Tensor exported = torch::jit::load(dir.File("q.pt")).forward({x}).toTensor();
  EXPECT_LE(RelativeError(exported, *simulated), 1e-5);
}

TEST(GraphEdit, ConvolutionBecomesConvolutionAndPerChannelScale) {
  auto g = ImportTorchScript(Fixture("resnet18.pt"));
  ASSERT_THAT(g, IsOk());
  at::NoGradGuard no_grad;
  const at::Tensor x = Input();
  const at::Tensor reference = RunGraph(*g, x);
  at::manual_seed(3);
  for (Node* n : ThreeByThreeConvs(*g)) {
    const at::Tensor w = ParamOf(*g, *n, "weight");
    const at::Tensor s = at::rand({w.size(0)}) + 0.5;
    Rewriter rw(*g);
    rw.SetInsertionPointBefore(*n);
    auto conv = Conv2d(rw, n->inputs[0], w / s.reshape({-1, 1, 1, 1}), std::nullopt, IntsOf(*g, *n, 3),
                       IntsOf(*g, *n, 4), n->name);
    ASSERT_THAT(conv, IsOk());
    const int scale = rw.Parameter(s.reshape({-1, 1, 1}));
    auto mul = rw.Create("aten::mul", {(*conv)->outputs[0], scale}, n->name + ".scale");
    ASSERT_THAT(mul, IsOk());
    rw.Own(**mul, "scale", 1);
    EXPECT_EQ((*mul)->kind, OpKind::kMul);
    ASSERT_THAT(rw.Replace(*n, {(*mul)->outputs[0]}), IsOk());
  }
  ASSERT_THAT(Verify(*g), IsOk());
  const at::Tensor edited = RunGraph(*g, x);
  EXPECT_LE(RelativeError(edited, reference), 1e-5);
  ExpectExportComputes(*g, x, edited);
}

TEST(GraphEdit, CloneIsIndependent) {
  auto g = ImportTorchScript(Fixture("resnet18.pt"));
  ASSERT_THAT(g, IsOk());
  at::NoGradGuard no_grad;
  const at::Tensor x = Input();
  const at::Tensor reference = RunGraph(*g, x);
  Graph copy = g->Clone();
  Node* conv = copy.FindNode("layer1.0.conv1");
  ASSERT_NE(conv, nullptr);
  copy.SetParam(*conv, "weight", 1, ParamOf(copy, *conv, "weight") * 0);
  EXPECT_GT(RelativeError(RunGraph(copy, x), reference), 1e-3);
  EXPECT_LE(RelativeError(RunGraph(*g, x), reference), 0.0) << "the original is untouched";
  EXPECT_THAT(Verify(copy), IsOk());
}

// Silences output channels [0, half) of `layer` (weights and bias zero: after its ReLU they
// are exactly zero), so removing them must leave the output as it is.
std::vector<int64_t> SilenceFirstHalf(Graph& g, const std::string& layer) {
  Node* n = g.FindNode(layer);
  EXPECT_NE(n, nullptr) << layer;
  at::Tensor w = ParamOf(g, *n, "weight").clone();
  at::Tensor b = ParamOf(g, *n, "bias").clone();
  const int64_t half = w.size(0) / 2;
  w.slice(0, 0, half).zero_();
  b.slice(0, 0, half).zero_();
  g.SetParam(*n, "weight", 1, w);
  g.SetParam(*n, "bias", 2, b);
  std::vector<int64_t> keep;
  for (int64_t c = half; c < w.size(0); ++c) keep.push_back(c);
  return keep;
}

TEST(GraphEdit, RemovingChannelsUpdatesConsumers) {
  auto g = ImportTorchScript(Fixture("resnet18.pt"));
  ASSERT_THAT(g, IsOk());
  at::NoGradGuard no_grad;
  ASSERT_THAT(FoldBatchNorms(*g), IsOk());
  const at::Tensor x = Input();
  const std::vector<int64_t> keep = SilenceFirstHalf(*g, "layer1.0.conv1");
  const at::Tensor reference = RunGraph(*g, x);
  ASSERT_THAT(KeepOutputChannels(*g, *g->FindNode("layer1.0.conv1"), keep), IsOk());
  ASSERT_THAT(Verify(*g), IsOk());
  EXPECT_EQ(ParamOf(*g, *g->FindNode("layer1.0.conv1"), "weight").sizes(), (at::IntArrayRef{32, 64, 3, 3}));
  EXPECT_EQ(ParamOf(*g, *g->FindNode("layer1.0.conv2"), "weight").sizes(), (at::IntArrayRef{64, 32, 3, 3}));
  const at::Tensor pruned = RunGraph(*g, x);
  EXPECT_LE(RelativeError(pruned, reference), 1e-5);
  ExpectExportComputes(*g, x, pruned);
  // The second conv of a block feeds the residual add: its channels cannot go alone.
  EXPECT_THAT(KeepOutputChannels(*g, *g->FindNode("layer1.0.conv2"), keep),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("aten::add")));
  EXPECT_EQ(ParamOf(*g, *g->FindNode("layer1.0.conv2"), "weight").size(0), 64) << "unchanged after a refusal";
}

TEST(GraphEdit, RemovingChannelsFollowsFlattenIntoTheClassifier) {
  auto g = ImportTorchScript(Fixture("mobilenet_v2.pt"));
  ASSERT_THAT(g, IsOk());
  at::NoGradGuard no_grad;
  ASSERT_THAT(FoldBatchNorms(*g), IsOk());
  const at::Tensor x = Input();
  const std::vector<int64_t> keep = SilenceFirstHalf(*g, "features.18.0");
  const at::Tensor reference = RunGraph(*g, x);
  EXPECT_THAT(KeepOutputChannels(*g, *g->FindNode("features.18.0"), keep),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("known shape")));
  ASSERT_THAT(InferShapes(*g, {{1, 3, 64, 64}}), IsOk());
  ASSERT_THAT(KeepOutputChannels(*g, *g->FindNode("features.18.0"), keep), IsOk());
  ASSERT_THAT(Verify(*g), IsOk());
  EXPECT_EQ(ParamOf(*g, *g->FindNode("classifier.1"), "weight").size(1), 640);
  EXPECT_LE(RelativeError(RunGraph(*g, x), reference), 1e-5);
}

TEST(GraphEdit, RewriterRejectsWhatCannotRun) {
  auto g = ImportTorchScript(Fixture("resnet18.pt"));
  ASSERT_THAT(g, IsOk());
  Rewriter rw(*g);
  Node* conv = g->FindNode("layer1.0.conv1");
  rw.SetInsertionPointBefore(*conv);
  EXPECT_THAT(rw.Create("aten::conv2d", {conv->inputs[0]}, "bad"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no overload of aten::conv2d takes (Tensor)")));
  EXPECT_THAT(rw.Create("aten::no_such_op", {conv->inputs[0]}, "bad"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("aten::no_such_op")));
  EXPECT_THAT(rw.Erase(*conv), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("still used")));
  EXPECT_THAT(Verify(*g), IsOk());
}

TEST(GraphEdit, VerifyCatchesBrokenGraphs) {
  auto g = ImportTorchScript(Fixture("resnet18.pt"));
  ASSERT_THAT(g, IsOk());
  ASSERT_THAT(Verify(*g), IsOk());
  Graph use_before_def = g->Clone();
  std::swap(use_before_def.body.nodes.front(), use_before_def.body.nodes.back());
  EXPECT_THAT(Verify(use_before_def), StatusIs(absl::StatusCode::kInternal, HasSubstr("before it is defined")));
  Graph bad_param = g->Clone();
  bad_param.values[bad_param.FindNode("fc")->Param("weight")].shape = std::vector<int64_t>{1};
  EXPECT_THAT(Verify(bad_param), StatusIs(absl::StatusCode::kInternal, HasSubstr("fc.weight")));
}

}  // namespace
}  // namespace qopt
