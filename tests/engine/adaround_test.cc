// AdaRound on real TorchScript fixtures: a single layer's learned rounding beats nearest
// rounding on reconstruction error and stays on the quantization grid; the whole-model
// pass writes rounded weights back with frozen encodings (export reproduces them), keeps
// the float model as it was, spills to disk past its memory budget with the same result,
// and stops when cancelled.
#include "techniques/adaround.h"

#include <ATen/ATen.h>
#include <torch/script.h>

#include "absl/strings/str_cat.h"
#include "data/tensor_file.h"
#include "export/torchscript_export.h"
#include "ir/import.h"
#include "passes/batch_norm_fold.h"
#include "test_util.h"

namespace qopt {
namespace {

using ::qopt::testing::Fixture;
using ::qopt::testing::IsOk;
using ::qopt::testing::StatusIs;

struct Model {
  Graph graph;
  std::unique_ptr<QuantSim> sim;
  std::vector<at::Tensor> batches;
};

// A model, batch norms folded, 4-bit per-channel weights, calibrated: the resnet18
// fixture (64x64 inputs) or a zoo model (28x28; small_cnn has four layers: the fast one).
std::unique_ptr<Model> Load(const std::string& which = "small_cnn") {
  auto m = std::make_unique<Model>();
  const bool resnet = which == "resnet18";
  auto g = ImportTorchScript(resnet ? Fixture("resnet18.pt") : ::qopt::testing::SourcePath("zoo/" + which + ".pt"));
  EXPECT_THAT(g, IsOk());
  m->graph = std::move(*g);
  EXPECT_THAT(FoldBatchNorms(m->graph), IsOk());
  QuantSimOptions o;
  o.param_bitwidth = 4;
  o.per_channel = true;
  auto sim = QuantSim::Create(m->graph, o);
  EXPECT_THAT(sim, IsOk());
  m->sim = std::move(*sim);
  if (resnet) {
    auto data = LoadNpy(Fixture("calib.npy"));
    EXPECT_THAT(data, IsOk());
    for (int64_t b = 0; b < 32; b += 8) m->batches.push_back(data->slice(0, b, b + 8));
  } else {
    at::manual_seed(3);
    for (int b = 0; b < 4; ++b) m->batches.push_back(at::randn({16, 1, 28, 28}));
  }
  at::NoGradGuard no_grad;
  for (const auto& b : m->batches) EXPECT_THAT(m->sim->ObserveBatch({c10::IValue(b)}), IsOk());
  EXPECT_THAT(m->sim->FinishCalibration(), IsOk());
  return m;
}

// The float inputs and targets of one layer on the calibration batches.
std::pair<at::Tensor, at::Tensor> LayerData(const Model& m, const Node& layer) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> xs, ys;
  for (const auto& b : m.batches) {
    ValueCapture in(layer.inputs[0]), out(layer.outputs[0]);
    EXPECT_THAT(m.sim->RunFloat({c10::IValue(b)}, &in), IsOk());
    EXPECT_THAT(m.sim->RunFloat({c10::IValue(b)}, &out), IsOk());
    xs.push_back(in.Take());
    ys.push_back(out.Take());
  }
  return {at::cat(xs), at::cat(ys)};
}

// Learns `layer`'s rounding from its float inputs and targets and checks that it beats
// nearest rounding and stays on the weight's grid (quantizing again changes nothing).
// Returns the rounded weight (undefined when AdaRound failed).
at::Tensor LearnAndCheck(const Model& m, const Node& layer, int iterations) {
  const auto [x, y] = LayerData(m, layer);
  const int wid = layer.Param("weight");
  const at::Tensor w = m.graph.values[wid].constant->toTensor();
  const at::Tensor b = m.graph.values[layer.Param("bias")].constant->toTensor();
  const Quantizer& q = m.sim->param_quantizers().at(wid);
  AdaRoundOptions o;
  o.num_iterations = iterations;
  AdaRoundLayerResult r;
  auto rounded = AdaRoundLayer(m.graph, layer, w, b, q, x, y, o, 0, 1, &r);
  EXPECT_THAT(rounded, IsOk());
  if (!rounded.ok()) return at::Tensor();
  EXPECT_LT(r.adaround_error, 0.9 * r.nearest_error)
      << "learned " << r.adaround_error << " vs nearest " << r.nearest_error;
  EXPECT_GT(r.flipped, 0);
  EXPECT_TRUE(at::equal(q.Apply(*rounded), *rounded));
  return *rounded;
}

TEST(AdaRound, SingleLayerBeatsNearestRoundingOnTheGrid) {
  auto m = Load("resnet18");
  const Node* layer = m->graph.FindNode("layer1.0.conv1");
  ASSERT_NE(layer, nullptr);
  const at::Tensor rounded = LearnAndCheck(*m, *layer, 400);
  ASSERT_TRUE(rounded.defined());
  // Each weight moved less than a step.
  const int wid = layer->Param("weight");
  const at::Tensor w = m->graph.values[wid].constant->toTensor();
  std::vector<double> scales;
  for (const auto& e : m->sim->param_quantizers().at(wid).encodings()) scales.push_back(e.scale);
  const at::Tensor s = at::tensor(scales, at::kDouble).reshape({-1, 1, 1, 1}).to(at::kFloat);
  EXPECT_LE(((rounded - w).abs() / s).max().item<double>(), 1.0 + 1e-4);
}

// On by default: a layer annealed over a short schedule stops once the rule holds (hard
// rounding, no decision changed in the window, the loss flat), well before its ceiling,
// and says where and why; the same layer on AIMET's fixed schedule runs every iteration
// and still reports where the rule first held; a ceiling below the point of convergence
// is reported as such.
TEST(AdaRound, StopsOnceConvergedAndSaysWhy) {
  auto m = Load("resnet18");
  const Node* layer = m->graph.FindNode("layer1.0.conv1");
  ASSERT_NE(layer, nullptr);
  const auto [x, y] = LayerData(*m, *layer);
  const int wid = layer->Param("weight");
  const at::Tensor w = m->graph.values[wid].constant->toTensor();
  const at::Tensor b = m->graph.values[layer->Param("bias")].constant->toTensor();
  const Quantizer& q = m->sim->param_quantizers().at(wid);
  auto learn = [&](AdaRoundOptions o) {
    AdaRoundLayerResult r;
    EXPECT_THAT(AdaRoundLayer(m->graph, *layer, w, b, q, x, y, o, 0, 1, &r), IsOk());
    return r;
  };

  AdaRoundOptions o;
  o.num_iterations = 4000;
  o.schedule_iterations = 400;
  const AdaRoundLayerResult converged = learn(o);
  EXPECT_EQ(converged.stop, AdaRoundLayerResult::Stop::kConverged) << converged.stop_reason;
  EXPECT_STREQ(AdaRoundStopName(converged.stop), "converged");
  EXPECT_GE(converged.iterations, 400);
  EXPECT_LT(converged.iterations, 4000);
  EXPECT_EQ(converged.max_iterations, 4000);
  EXPECT_EQ(converged.converged_at, converged.iterations);
  // Either nearly every rounding variable is at 0 or 1, or the decisions have settled.
  if (converged.hard_fraction < AdaRoundLayerResult::kConvergedHardFraction) {
    EXPECT_THAT(converged.stop_reason, ::testing::HasSubstr("no rounding decision changed over the last"));
    EXPECT_GE(converged.iterations, 400 + AdaRoundLayerResult::kSettledWindows * 100);
  }
  EXPECT_THAT(converged.stop_reason,
              ::testing::HasSubstr(absl::StrCat("converged at ", converged.iterations, ": ")));
  EXPECT_LT(converged.adaround_error, 0.9 * converged.nearest_error);
  // The curve covers the run: it starts at 1 and ends at or before the stop.
  ASSERT_FALSE(converged.curve_iterations.empty());
  EXPECT_EQ(converged.curve_iterations.front(), 1);
  EXPECT_LE(converged.curve_iterations.back(), converged.iterations);

  o.stop_on_convergence = false;
  o.num_iterations = 600;
  const AdaRoundLayerResult fixed = learn(o);
  EXPECT_EQ(fixed.stop, AdaRoundLayerResult::Stop::kFixedSchedule);
  EXPECT_EQ(fixed.iterations, 600);
  EXPECT_THAT(fixed.stop_reason, ::testing::HasSubstr("fixed schedule after 600 iterations"));

  o.stop_on_convergence = true;
  o.num_iterations = 250;  // the schedule is cut to the ceiling; the rule cannot hold yet
  const AdaRoundLayerResult ceiling = learn(o);
  EXPECT_EQ(ceiling.stop, AdaRoundLayerResult::Stop::kCeiling) << ceiling.stop_reason;
  EXPECT_EQ(ceiling.iterations, 250);
  EXPECT_THAT(ceiling.stop_reason, ::testing::HasSubstr("ceiling reached after 250 iterations"));
}

// A transposed convolution (per-channel weights along axis 1) and a linear layer applied
// to tokens (inputs (N, 50, 64)): each layer's own op reproduces the model's output, and
// the learned rounding beats nearest rounding and stays on the weight's grid.
TEST(AdaRound, TransposedConvAndTokenLinearLayersLearnTheirRounding) {
  for (const auto& [model, name] : std::vector<std::pair<std::string, std::string>>{
           {"segmentation", "up2"}, {"vit_tiny", "blocks.0.fc1"}}) {
    SCOPED_TRACE(name);
    auto m = Load(model);
    const Node* layer = m->graph.FindNode(name);
    ASSERT_NE(layer, nullptr);
    const auto [x, y] = LayerData(*m, *layer);
    auto same = LayerForward(m->graph, *layer, x, m->graph.values[layer->Param("weight")].constant->toTensor(),
                             m->graph.values[layer->Param("bias")].constant->toTensor());
    ASSERT_THAT(same, IsOk());
    EXPECT_TRUE(at::allclose(*same, y, 1e-4, 1e-5)) << (*same - y).abs().max().item<double>();
    EXPECT_TRUE(LearnAndCheck(*m, *layer, 300).defined());
  }
  // The whole-model pass includes the transposed convolution.
  auto m = Load("segmentation");
  AdaRoundOptions o;
  o.num_iterations = 5;
  auto results = ApplyAdaRound(m->graph, *m->sim, m->batches, o);
  ASSERT_THAT(results, IsOk());
  EXPECT_TRUE(std::any_of(results->begin(), results->end(), [](const AdaRoundLayerResult& r) {
    return r.layer == "up2";
  }));
}

TEST(AdaRound, WholeModelWritesBackFrozenRoundedWeights) {
  auto m = Load();
  const at::Tensor x = m->batches[0];
  at::NoGradGuard no_grad;
  auto float_before = m->sim->ForwardFloat(x);
  auto sim_before = m->sim->Forward(x);
  ASSERT_THAT(float_before, IsOk());
  std::vector<AdaRoundProgress> seen;
  AdaRoundOptions o;
  o.num_iterations = 40;
  o.on_progress = [&](const AdaRoundProgress& p) {
    seen.push_back(p);
    return absl::OkStatus();
  };
  auto results = ApplyAdaRound(m->graph, *m->sim, m->batches, o);
  ASSERT_THAT(results, IsOk());
  EXPECT_EQ(results->size(), 4u) << "conv1, conv2, fc1, fc2";
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().layer_index + 1, seen.back().num_layers);
  EXPECT_EQ(seen.back().iteration, 40);

  for (const auto& [vid, q] : m->sim->param_quantizers()) {
    if (m->graph.values[vid].name.find(".weight") == std::string::npos) continue;
    const at::Tensor w = m->graph.values[vid].constant->toTensor();
    EXPECT_TRUE(q.frozen()) << m->graph.values[vid].name;
    EXPECT_TRUE(at::equal(q.Apply(w), w)) << m->graph.values[vid].name << " is not on its grid";
  }
  // The float model is still the original one; the simulated one changed.
  auto float_after = m->sim->ForwardFloat(x);
  ASSERT_THAT(float_after, IsOk());
  EXPECT_TRUE(at::allclose(*float_after, *float_before, 1e-5, 1e-6));
  auto sim_after = m->sim->Forward(x);
  ASSERT_THAT(sim_after, IsOk());
  EXPECT_FALSE(at::allclose(*sim_after, *sim_before, 1e-6, 1e-7));

  // Export carries exactly the rounded weights: stock PyTorch computes what the sim does.
  qopt::testing::TempDir dir;
  ASSERT_THAT(ExportTorchScript(m->graph, m->sim.get(), dir.File("ada.pt")), IsOk());
  torch::jit::Module exported = torch::jit::load(dir.File("ada.pt"));
  const at::Tensor theirs = exported.forward({x}).toTensor();
  EXPECT_LE(((theirs - *sim_after).norm() / sim_after->norm()).item<double>(), 1e-5);
}

TEST(AdaRound, SpillsPastTheMemoryBudgetWithTheSameResult) {
  auto in_memory = Load();
  auto spilled = Load();
  AdaRoundOptions o;
  o.num_iterations = 30;
  o.skip_layers = {};
  auto a = ApplyAdaRound(in_memory->graph, *in_memory->sim, in_memory->batches, o);
  o.memory_budget_bytes = 1;
  auto b = ApplyAdaRound(spilled->graph, *spilled->sim, spilled->batches, o);
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  ASSERT_EQ(a->size(), b->size());
  EXPECT_FALSE(a->front().spilled);
  EXPECT_TRUE(b->front().spilled);
  for (size_t i = 0; i < a->size(); ++i) EXPECT_EQ((*a)[i].flipped, (*b)[i].flipped) << (*a)[i].layer;
  for (const char* name : {"conv1", "conv2", "fc1", "fc2"}) {
    const Node* a_layer = in_memory->graph.FindNode(name);
    const Node* b_layer = spilled->graph.FindNode(name);
    ASSERT_NE(a_layer, nullptr);
    EXPECT_TRUE(at::equal(in_memory->graph.values[a_layer->Param("weight")].constant->toTensor(),
                          spilled->graph.values[b_layer->Param("weight")].constant->toTensor()))
        << name;
  }
}

TEST(AdaRound, CancelledMidwayStops) {
  auto m = Load();
  AdaRoundOptions o;
  o.num_iterations = 100;
  int calls = 0;
  o.on_progress = [&](const AdaRoundProgress& p) -> absl::Status {
    ++calls;
    if (p.layer_index == 1 && p.iteration >= 50) return absl::CancelledError("job cancelled");
    return absl::OkStatus();
  };
  auto results = ApplyAdaRound(m->graph, *m->sim, m->batches, o);
  EXPECT_THAT(results, StatusIs(absl::StatusCode::kCancelled, ::testing::HasSubstr("cancelled")));
  EXPECT_LT(calls, 2 * 100) << "stopped inside the second layer";
}

TEST(AdaRound, BadInputIsRejected) {
  auto m = Load();
  AdaRoundOptions o;
  o.skip_layers = {"no.such.layer"};
  EXPECT_THAT(ApplyAdaRound(m->graph, *m->sim, m->batches, o),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("no.such.layer")));
  EXPECT_THAT(ApplyAdaRound(m->graph, *m->sim, {}, AdaRoundOptions()),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("calibration data")));
}

}  // namespace
}  // namespace qopt
