// Compression on real TorchScript models: SVD splits that compute what the layer computed at
// full rank and cost what they claim below it; channel pruning whose least-squares refit
// beats plain slicing; greedy ratio selection on ResNet18, MobileNetV2, GoogLeNet (concats),
// ShuffleNetV2 (channel shuffle, depthwise) and a DenseNet-style net (concats, grouped
// convs, squeeze-excite): each layer compressed or skipped with a reason, the result runs
// and stock LibTorch runs its export.
#include <ATen/ATen.h>
#include <torch/script.h>

#include "compress/channel_pruning.h"
#include "compress/compression.h"
#include "compress/svd.h"
#include "data/dataset.h"
#include "data/tensor_file.h"
#include "export/torchscript_export.h"
#include "ir/cost_model.h"
#include "ir/import.h"
#include "ir/interpreter.h"
#include "ir/shape_inference.h"
#include "ir/verify.h"
#include "test_util.h"

namespace qopt {
namespace {

using ::qopt::testing::Fixture;
using ::qopt::testing::IsOk;
using ::qopt::testing::StatusIs;
using ::testing::HasSubstr;

const std::vector<std::vector<int64_t>> kShape = {{1, 3, 64, 64}};

at::Tensor Inputs(int64_t n) {
  auto data = LoadNpy(Fixture("calib.npy"));
  EXPECT_THAT(data, IsOk());
  return data->slice(0, 0, n);
}

Graph Load(const std::string& name) {
  auto g = ImportTorchScript(Fixture(name));
  EXPECT_THAT(g, IsOk());
  EXPECT_THAT(InferShapes(*g, kShape), IsOk());
  return std::move(*g);
}

at::Tensor RunModel(const Graph& g, const at::Tensor& x) {
  auto out = Interpreter(g).Forward(x);
  EXPECT_THAT(out, IsOk());
  return out.ok() ? *out : at::zeros({1});
}

double RelativeError(const at::Tensor& a, const at::Tensor& b) { return ((a - b).norm() / b.norm()).item<double>(); }

// The output SQNR (dB) of `g` against `reference` outputs: the score the tests select by.
double Sqnr(const Graph& g, const at::Tensor& x, const at::Tensor& reference) {
  const at::Tensor y = RunModel(g, x);
  return 10 * std::log10(reference.pow(2).sum().item<double>() / ((y - reference).pow(2).sum().item<double>() + 1e-30));
}

std::vector<std::string> Layers(const Graph& g) {
  std::vector<std::string> out;
  for (const Node* n : g.LiveNodes()) {
    if (n->kind == OpKind::kConv || n->kind == OpKind::kLinear) out.push_back(n->name);
  }
  return out;
}

void ExpectExportComputes(const Graph& g, const at::Tensor& x, const at::Tensor& expected) {
  qopt::testing::TempDir dir;
  ASSERT_THAT(ExportTorchScript(g, nullptr, dir.File("compressed.pt")), IsOk());
  torch::jit::Module m = torch::jit::load(dir.File("compressed.pt"));
  EXPECT_LE(RelativeError(m.forward({x}).toTensor(), expected), 1e-5);
}

TEST(Svd, FullRankComputesWhatTheLayerComputed) {
  at::NoGradGuard no_grad;
  const at::Tensor x = Inputs(4);
  for (SvdKind kind : {SvdKind::kSpatial, SvdKind::kWeight}) {
    Graph g = Load("resnet18.pt");
    const at::Tensor reference = RunModel(g, x);
    int split = 0;
    for (const std::string& name : Layers(g)) {
      const Node& n = *g.FindNode(name);
      // layer4's 512-channel SVDs take seconds each and show nothing new.
      if (!SvdSkipReason(g, n, kind).empty() || name.rfind("layer4", 0) == 0) continue;
      const SvdCost cost = SvdCostOf(g, n, kind, CostMetric::kMacs);
      ASSERT_THAT(SplitBySvd(g, name, kind, cost.max_rank), IsOk()) << name;
      ++split;
    }
    // Spatial: every 3x3 and the 7x7 stem; weight: every convolution and the fc layer.
    EXPECT_EQ(split, kind == SvdKind::kSpatial ? 13 : 16);
    ASSERT_THAT(Verify(g), IsOk());
    EXPECT_EQ(g.FindNode("layer1.0.conv1"), nullptr);
    ASSERT_NE(g.FindNode("layer1.0.conv1.0"), nullptr);
    ASSERT_NE(g.FindNode("layer1.0.conv1.1"), nullptr);
    const at::Tensor out = RunModel(g, x);
    EXPECT_LE(RelativeError(out, reference), 1e-5);
    ExpectExportComputes(g, x, out);
  }
}

TEST(Svd, TruncatedRankCostsWhatItClaims) {
  at::NoGradGuard no_grad;
  Graph g = Load("resnet18.pt");
  auto before = CountCost(g);
  ASSERT_THAT(before, IsOk());
  for (SvdKind kind : {SvdKind::kSpatial, SvdKind::kWeight}) {
    for (CostMetric metric : {CostMetric::kMacs, CostMetric::kMemory}) {
      Graph c = g.Clone();
      const Node& n = *c.FindNode("layer2.0.conv2");
      const SvdCost cost = SvdCostOf(c, n, kind, metric);
      const int64_t rank = SvdRankForRatio(cost, 0.3, 8);
      ASSERT_GT(rank, 0);
      EXPECT_EQ(rank % 8, 0);
      EXPECT_LE(rank * cost.per_rank, 0.3 * cost.original + 8 * cost.per_rank);
      ASSERT_THAT(SplitBySvd(c, "layer2.0.conv2", kind, rank), IsOk());
      ASSERT_THAT(InferShapes(c, kShape), IsOk());
      auto after = CountCost(c);
      ASSERT_THAT(after, IsOk());
      // The layer's cost falls by what SvdCostOf predicts; nothing else changes.
      const int64_t saved = metric == CostMetric::kMacs ? before->macs - after->macs : before->parameters - after->parameters;
      EXPECT_EQ(saved, cost.original - rank * cost.per_rank);
    }
  }
  // A ratio whose rank saves nothing leaves the layer as it is.
  const SvdCost cost = SvdCostOf(g, *g.FindNode("layer2.0.conv2"), SvdKind::kWeight, CostMetric::kMacs);
  EXPECT_EQ(SvdRankForRatio(cost, 1.0, 1), 0);
  EXPECT_THAT(SplitBySvd(g, "layer2.0.conv2", SvdKind::kWeight, cost.max_rank + 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outside 1..")));
  EXPECT_THAT(SvdSkipReason(g, *g.FindNode("layer2.0.downsample.0"), SvdKind::kSpatial),
              HasSubstr("nothing to split spatially"));
  EXPECT_THAT(SvdSkipReason(g, *g.FindNode("fc"), SvdKind::kSpatial), HasSubstr("linear"));
}

TEST(ChannelPruning, SkipsWhatAResidualAddOrTheInputForbids) {
  Graph g = Load("resnet18.pt");
  EXPECT_EQ(PruningSkipReason(g, *g.FindNode("layer1.0.conv2")), "");
  EXPECT_THAT(PruningSkipReason(g, *g.FindNode("conv1")), HasSubstr("model's input"));
  // conv1 of a block reads the previous block's output: a residual add.
  EXPECT_THAT(PruningSkipReason(g, *g.FindNode("layer2.0.conv1")), HasSubstr("add"));
  EXPECT_THAT(PruningSkipReason(g, *g.FindNode("fc")), HasSubstr("linear"));
  EXPECT_EQ(ChannelsForRatio(64, 0.5, 1), 32);
  EXPECT_EQ(ChannelsForRatio(64, 0.3, 8), 24);
  EXPECT_EQ(ChannelsForRatio(3, 0.1, 1), 1);
}

TEST(ChannelPruning, ReconstructionBeatsSlicing) {
  at::NoGradGuard no_grad;
  Graph original = Load("resnet18.pt");
  const at::Tensor x = Inputs(32);
  const std::vector<at::Tensor> inputs = {x.slice(0, 0, 16), x.slice(0, 16, 32)};
  ValueCapture capture(original.FindNode("layer1.0.conv2")->outputs[0]);
  ASSERT_THAT(Interpreter(original).Run({x}, &capture), IsOk());
  const at::Tensor layer_reference = capture.Take();
  ChannelPruningOptions options;
  options.num_samples = 2000;
  ChannelPruner pruner(original, inputs, options);
  const std::string layer = "layer1.0.conv2";
  double error[3];
  int k = 0;
  for (Reconstruction mode : {Reconstruction::kNone, Reconstruction::kAlone, Reconstruction::kInSequence}) {
    Graph g = original.Clone();
    ASSERT_THAT(pruner.Prune(g, layer, 32, mode), IsOk());
    ASSERT_THAT(Verify(g), IsOk());
    const at::Tensor w = g.values[g.FindNode(layer)->Param("weight")].constant->toTensor();
    EXPECT_EQ(w.size(1), 32);
    EXPECT_EQ(g.values[g.FindNode("layer1.0.conv1")->Param("weight")].constant->toTensor().size(0), 32);
    // The layer's own output, against the original's.
    ValueCapture out(g.FindNode(layer)->outputs[0]);
    ASSERT_THAT(Interpreter(g).Run({x}, &out), IsOk());
    error[k++] = RelativeError(out.Take(), layer_reference);
  }
  EXPECT_GT(pruner.samples(), 1900);
  // The refit from cached statistics and the one sampled afresh agree, and both beat
  // keeping the sliced weights.
  EXPECT_NEAR(error[1], error[2], 1e-3);
  EXPECT_LT(error[1], 0.8 * error[0]) << "sliced " << error[0] << ", refitted " << error[1];
}

struct Case {
  const char* model;  // zoo models (trained, Fashion-MNIST) start with "zoo/"; the rest are fixtures
  CompressionMethod method;
  int num_candidates;
};

// The first `n` Fashion-MNIST test images, normalized as the zoo trains.
at::Tensor FashionMnist(int64_t n) {
  DatasetSpec spec;
  spec.path = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
  spec.max_samples = n;
  spec.preprocess.mean = {0.286};
  spec.preprocess.std = {0.353};
  auto d = LoadDataset(spec);
  EXPECT_THAT(d, IsOk());
  return d.ok() ? d->inputs : at::zeros({n, 1, 28, 28});
}

class Greedy : public ::testing::TestWithParam<Case> {};

TEST_P(Greedy, CompressesOrSkipsEveryLayerAndTheResultRuns) {
  at::NoGradGuard no_grad;
  const Case c = GetParam();
  const std::string model = c.model;
  const bool zoo = model.rfind("zoo/", 0) == 0;
  auto imported = ImportTorchScript(zoo ? ::qopt::testing::SourcePath(model) : Fixture(model));
  ASSERT_THAT(imported, IsOk());
  Graph g = std::move(*imported);
  const std::vector<std::vector<int64_t>> shape = {zoo ? std::vector<int64_t>{1, 1, 28, 28} : kShape[0]};
  const at::Tensor x = zoo ? FashionMnist(64) : Inputs(8);
  const at::Tensor reference = RunModel(g, x);
  CompressionOptions options;
  options.method = c.method;
  options.target_ratio = 0.8;
  options.num_candidates = c.num_candidates;
  options.input_shapes = shape;
  options.pruning.num_samples = 400;
  CompressionCallbacks callbacks;
  callbacks.score = [&](const Graph& candidate) -> absl::StatusOr<double> { return Sqnr(candidate, x, reference); };
  callbacks.score_name = "output_sqnr_db";
  callbacks.progress = [](double, const std::string&) { return absl::OkStatus(); };
  callbacks.log = [](const std::string&) { return absl::OkStatus(); };
  const std::vector<at::Tensor> inputs = {x};
  auto result = CompressModel(g, options, inputs, callbacks);
  ASSERT_THAT(result, IsOk());
  ASSERT_THAT(Verify(*result->graph), IsOk());
  int compressed = 0, skipped = 0;
  for (const LayerOutcome& row : result->layers) {
    if (!row.skipped.empty()) {
      ++skipped;
      EXPECT_EQ(row.how, "") << row.layer;
    } else if (!row.how.empty()) {
      ++compressed;
      EXPECT_LT(row.ratio, 1.0);
      EXPECT_LT(row.cost_after, row.cost_before) << row.layer;
    }
  }
  EXPECT_GT(compressed, 0);
  ASSERT_TRUE(result->dictionary.has_value());
  EXPECT_GT(result->evaluations, 0);
  const double achieved = static_cast<double>(result->after.macs) / result->before.macs;
  EXPECT_LE(achieved, 0.8 + 1e-9);
  EXPECT_GT(achieved, 0.2);
  const at::Tensor out = RunModel(*result->graph, x);
  EXPECT_EQ(out.sizes(), reference.sizes());
  EXPECT_TRUE(out.isfinite().all().item<bool>());
  ExpectExportComputes(*result->graph, x, out);
  // The input graph is untouched.
  EXPECT_LE(RelativeError(RunModel(g, x), reference), 0);
  if (c.method == CompressionMethod::kChannelPruning) EXPECT_GT(skipped, 0);
  if (zoo) {
    // A trained model keeps most of its decisions at 80 % of its MACs.
    EXPECT_GT((out.argmax(1) == reference.argmax(1)).to(at::kFloat).mean().item<double>(), 0.6);
  }

  // The dictionary read back from its artifact makes the same choice without scoring.
  auto saved = EvalDictionaryFromJson(EvalDictionaryToJson(*result->dictionary));
  ASSERT_THAT(saved, IsOk());
  options.saved = *saved;
  auto again = CompressModel(g, options, inputs, callbacks);
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(again->evaluations, 0);
  EXPECT_GT(again->reused, 0);
  EXPECT_EQ(again->after.macs, result->after.macs);
}

// Zoo models (trained) at 3 candidates per layer; the large random fixtures at one (0.5).
INSTANTIATE_TEST_SUITE_P(
    Models, Greedy,
    ::testing::Values(Case{"zoo/resnet18.pt", CompressionMethod::kSpatialSvd, 4},
                      Case{"zoo/resnet18.pt", CompressionMethod::kChannelPruning, 4},
                      Case{"zoo/mobilenet_v2.pt", CompressionMethod::kWeightSvd, 4},
                      Case{"zoo/mobilenet_v2.pt", CompressionMethod::kChannelPruning, 4},
                      Case{"googlenet.pt", CompressionMethod::kChannelPruning, 2},
                      Case{"shufflenet_v2.pt", CompressionMethod::kWeightSvd, 2},
                      Case{"shufflenet_v2.pt", CompressionMethod::kChannelPruning, 4},
                      Case{"control_flow.pt", CompressionMethod::kSpatialSvd, 4},
                      Case{"dense_tiny.pt", CompressionMethod::kSpatialSvd, 4},
                      Case{"dense_tiny.pt", CompressionMethod::kChannelPruning, 4}),
    [](const ::testing::TestParamInfo<Case>& info) {
      std::string name = info.param.model;
      if (name.rfind("zoo/", 0) == 0) name = "zoo_" + name.substr(4);
      name = name.substr(0, name.find('.'));
      return name + "_" + MethodName(info.param.method);
    });

TEST(Compression, BadOptionsFailWithTheReason) {
  Graph g = Load("dense_tiny.pt");
  const at::Tensor x = Inputs(4);
  CompressionCallbacks callbacks;
  callbacks.score = [&](const Graph&) -> absl::StatusOr<double> { return 1.0; };
  callbacks.progress = [](double, const std::string&) { return absl::OkStatus(); };
  callbacks.log = [](const std::string&) { return absl::OkStatus(); };
  const std::vector<at::Tensor> inputs = {x};
  CompressionOptions options;
  options.input_shapes = kShape;
  options.method = CompressionMethod::kChannelPruning;
  options.exclude_layers = {"no.such.layer"};
  EXPECT_THAT(CompressModel(g, options, inputs, callbacks),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no layer named 'no.such.layer'")));
  options.exclude_layers.clear();
  options.layer_ratios = {{"stem", 0.5}};
  EXPECT_THAT(CompressModel(g, options, inputs, callbacks),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("stem cannot be compressed by channel_pruning")));
  // Only the grouped convolution and the linear layer: nothing spatial SVD can split.
  options.layer_ratios.clear();
  options.method = CompressionMethod::kSpatialSvd;
  for (const std::string& layer : Layers(g)) {
    if (layer != "grouped" && layer != "fc") options.exclude_layers.push_back(layer);
  }
  EXPECT_THAT(CompressModel(g, options, inputs, callbacks),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("nothing in the model can be compressed")));
  // A target below what the most compressed candidates give.
  options.exclude_layers.clear();
  options.target_ratio = 0.01;
  EXPECT_THAT(CompressModel(g, options, inputs, callbacks),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("cannot be reached")));
  EXPECT_THAT(EvalDictionaryFromJson("{\"method\": 1}"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("must be a string")));
}

TEST(Compression, ManualRatiosApplyOnlyThoseLayers) {
  at::NoGradGuard no_grad;
  Graph g = Load("resnet18.pt");
  const at::Tensor x = Inputs(8);
  CompressionCallbacks callbacks;
  callbacks.score = [&](const Graph&) -> absl::StatusOr<double> {
    ADD_FAILURE() << "manual ratios score nothing";
    return 0.0;
  };
  callbacks.progress = [](double, const std::string&) { return absl::OkStatus(); };
  callbacks.log = [](const std::string&) { return absl::OkStatus(); };
  CompressionOptions options;
  options.input_shapes = kShape;
  options.method = CompressionMethod::kChannelPruning;
  options.greedy = false;
  options.layer_ratios = {{"layer1.0.conv2", 0.25}, {"layer3.1.conv2", 0.5}};
  auto result = CompressModel(g, options, {x}, callbacks);
  ASSERT_THAT(result, IsOk());
  int changed = 0;
  for (const LayerOutcome& row : result->layers) {
    if (row.how.empty()) continue;
    ++changed;
    EXPECT_TRUE(row.layer == "layer1.0.conv2" || row.layer == "layer3.1.conv2") << row.layer;
  }
  EXPECT_EQ(changed, 2);
  EXPECT_EQ(result->graph->values[result->graph->FindNode("layer1.0.conv2")->Param("weight")].constant->toTensor().size(1), 16);
  EXPECT_FALSE(result->dictionary.has_value());
}

}  // namespace
}  // namespace qopt
