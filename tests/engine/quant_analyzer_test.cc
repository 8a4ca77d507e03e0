// The quantization analysis on the zoo's small CNN at W4A4 on real Fashion-MNIST images:
// its groups cover every quantizer once, its scores equal what the simulation gives with
// the same quantizers switched by hand, its output errors equal the evaluation's, its
// histograms count every value, and the simulation is left as it was.
#include <fstream>
#include <numeric>
#include <set>

#include <nlohmann/json.hpp>

#include <ATen/ATen.h>
#include <google/protobuf/util/message_differencer.h>

#include "absl/strings/str_cat.h"
#include "analysis/quant_analyzer.h"
#include "eval/evaluate.h"
#include "recipe/runner.h"
#include "recipe_json.h"
#include "small_cnn_fixture.h"
#include "test_util.h"

namespace qopt {
namespace {

using ::qopt::testing::IsOk;
using ::qopt::testing::StatusIs;
using ::qopt::testing::TempDir;
using ::qopt::testing::Top1;
using ::testing::HasSubstr;

using Model = ::qopt::testing::CalibratedSmallCnn;

std::unique_ptr<Model> Load() {
  QuantSimOptions o;
  o.param_bitwidth = 4;
  o.activation_bitwidth = 4;
  o.per_channel = true;
  return ::qopt::testing::LoadCalibratedSmallCnn(o);
}

void SetEnabled(QuantSim& sim, const std::vector<int>& vids, bool enabled) {
  for (int vid : vids) {
    QuantizerChange c;
    c.enabled = enabled;
    ASSERT_THAT(sim.ChangeQuantizer(vid, c), IsOk());
  }
}

std::vector<int> AllParams(const QuantSim& sim) {
  std::vector<int> out;
  for (const auto& [vid, q] : sim.param_quantizers()) out.push_back(vid);
  return out;
}

TEST(QuantizerGroupsTest, EveryQuantizerInOneGroupAndLayersKeepTheirReluOutput) {
  auto m = Load();
  const std::vector<QuantizerGroup> groups = QuantizerGroups(*m->sim);
  std::multiset<int> seen;
  for (const QuantizerGroup& g : groups) {
    seen.insert(g.params.begin(), g.params.end());
    seen.insert(g.activations.begin(), g.activations.end());
  }
  EXPECT_EQ(seen.size(), m->sim->param_quantizers().size() + m->sim->activation_quantizers().size());
  for (const auto& [vid, q] : m->sim->param_quantizers()) EXPECT_EQ(seen.count(vid), 1u);
  for (const auto& [vid, q] : m->sim->activation_quantizers()) EXPECT_EQ(seen.count(vid), 1u);
  // A convolution that feeds a ReLU alone has the ReLU's output quantizer in its group.
  int with_relu = 0;
  for (const QuantizerGroup& g : groups) {
    if (g.op_type != "Conv") continue;
    ASSERT_FALSE(g.params.empty()) << g.layer;
    for (int vid : g.activations) {
      const Node& producer = m->graph.nodes[m->graph.values[vid].producer];
      with_relu += producer.kind == OpKind::kRelu ? 1 : 0;
    }
  }
  EXPECT_GT(with_relu, 0);
  EXPECT_EQ(groups.front().layer, "input");
}

TEST(QuantSimTest, SwitchingAWeightQuantizerChangesTheSimulation) {
  at::NoGradGuard no_grad;
  auto m = Load();
  const at::Tensor x = m->batches[0].inputs;
  const at::Tensor all = *m->sim->Forward(x);
  SetEnabled(*m->sim, AllParams(*m->sim), false);
  const at::Tensor float_weights = *m->sim->Forward(x);
  EXPECT_FALSE(at::equal(all, float_weights));
  SetEnabled(*m->sim, AllParams(*m->sim), true);
  EXPECT_TRUE(at::equal(all, *m->sim->Forward(x)));
}

TEST(QuantAnalyzerTest, ScoresEqualTheSimulationWithQuantizersSwitchedByHand) {
  at::NoGradGuard no_grad;
  auto m = Load();
  QuantSim& sim = *m->sim;
  const double quantized = Top1(sim, m->batches);
  std::vector<std::string> streamed;
  AnalysisCallbacks callbacks;
  callbacks.on_layer = [&](const LayerAnalysis& l) {
    streamed.push_back(l.group.layer);
    return absl::OkStatus();
  };
  AnalysisOptions options;
  options.activation_samples = 400;
  auto r = AnalyzeQuantization(sim, m->batches, options, callbacks);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->score, "top1");
  EXPECT_EQ(r->eval_samples, 400);
  EXPECT_DOUBLE_EQ(r->quantized, quantized);
  auto figures = EvaluateSim(sim, m->batches, m->batches.size());
  ASSERT_THAT(figures, IsOk());
  EXPECT_DOUBLE_EQ(r->fp32, figures->at("fp32_top1"));
  EXPECT_EQ(r->evaluations, 3 + 2 * static_cast<int>(r->layers.size()));
  EXPECT_EQ(streamed.size(), r->layers.size());
  // W4A4 loses accuracy. (Whether weights or activations alone lose less is down to ties:
  // 4-bit logits often tie, and a tie counts as argmax decides it.)
  EXPECT_LT(r->quantized, r->fp32);

  // The simulation is as it was, then the same scores by hand.
  EXPECT_DOUBLE_EQ(Top1(sim, m->batches), quantized);
  sim.SetActivationQuantization(false);
  EXPECT_DOUBLE_EQ(Top1(sim, m->batches), r->weights_only);
  sim.SetActivationQuantization(true);
  SetEnabled(sim, AllParams(sim), false);
  EXPECT_DOUBLE_EQ(Top1(sim, m->batches), r->activations_only);
  SetEnabled(sim, AllParams(sim), true);

  // One convolution's group: only it quantized, and only it in floating point.
  const LayerAnalysis* conv = nullptr;
  for (const LayerAnalysis& l : r->layers) {
    if (l.group.op_type == "Conv" && conv == nullptr) conv = &l;
  }
  ASSERT_NE(conv, nullptr);
  std::vector<int> mine = conv->group.params, others;
  mine.insert(mine.end(), conv->group.activations.begin(), conv->group.activations.end());
  for (const auto& [vid, q] : sim.param_quantizers()) others.push_back(vid);
  for (const auto& [vid, q] : sim.activation_quantizers()) others.push_back(vid);
  others.erase(std::remove_if(others.begin(), others.end(),
                              [&](int v) { return std::find(mine.begin(), mine.end(), v) != mine.end(); }),
               others.end());
  SetEnabled(sim, others, false);
  EXPECT_DOUBLE_EQ(Top1(sim, m->batches), conv->only_enabled);
  SetEnabled(sim, others, true);
  SetEnabled(sim, mine, false);
  EXPECT_DOUBLE_EQ(Top1(sim, m->batches), conv->only_disabled);
  SetEnabled(sim, mine, true);
}

TEST(QuantAnalyzerTest, OutputErrorsRangesAndHistogramsCountWhatTheModelComputes) {
  at::NoGradGuard no_grad;
  auto m = Load();
  AnalysisOptions options;
  options.per_layer = false;
  options.activation_samples = 400;
  options.histogram_bins = 32;
  auto r = AnalyzeQuantization(*m->sim, m->batches, options);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->evaluations, 3);
  EXPECT_EQ(r->activation_samples, 400);
  auto figures = EvaluateSim(*m->sim, m->batches, m->batches.size());
  ASSERT_THAT(figures, IsOk());
  // The last group ends at the model's output: its SQNR is the evaluation's.
  const LayerAnalysis& last = r->layers.back();
  ASSERT_EQ(last.group.output, m->graph.outputs()[0]);
  EXPECT_NEAR(last.output_sqnr_db, figures->at("output_sqnr_db"), 1e-6);
  for (const LayerAnalysis& l : r->layers) {
    SCOPED_TRACE(l.group.layer);
    EXPECT_FALSE(std::isnan(l.output_mse));
    EXPECT_GE(l.output_mse, 0.0);
    // Every output value of 400 images is counted once.
    ASSERT_EQ(l.activations.counts.size(), 32u);
    const int64_t counted =
        std::accumulate(l.activations.counts.begin(), l.activations.counts.end(), int64_t{0}) + l.activations.below +
        l.activations.above;
    ValueCapture capture(l.group.output);
    ASSERT_THAT(m->sim->RunFloat({c10::IValue(m->batches[0].inputs.slice(0, 0, 1))}, &capture).status(), IsOk());
    EXPECT_EQ(counted, 400 * capture.Take().numel());
    EXPECT_LE(l.activation_min, l.activation_max);
    if (!std::isnan(l.encoding_min)) {
      EXPECT_LE(l.activations.lo, l.encoding_min);
      EXPECT_GE(l.activations.hi, l.encoding_max);
    }
    if (l.group.params.empty()) continue;
    // Weight ranges per output channel and a histogram of every weight.
    const Node& layer = *m->graph.FindNode(l.group.layer);
    const at::Tensor w = m->graph.values[layer.Param("weight")].constant->toTensor();
    ASSERT_EQ(static_cast<int64_t>(l.weight_min.size()), w.size(0));
    const at::Tensor rows = w.reshape({w.size(0), -1});
    for (int64_t c = 0; c < w.size(0); ++c) {
      EXPECT_FLOAT_EQ(l.weight_min[c], rows[c].min().item<float>());
      EXPECT_FLOAT_EQ(l.weight_max[c], rows[c].max().item<float>());
    }
    EXPECT_EQ(std::accumulate(l.weights.counts.begin(), l.weights.counts.end(), int64_t{0}), w.numel());
  }
}

TEST(QuantAnalyzerTest, WithoutLabelsTheScoreIsOutputSqnr) {
  at::NoGradGuard no_grad;
  auto m = Load();
  std::vector<Batch> unlabelled;
  for (const Batch& b : m->batches) unlabelled.push_back(Batch{b.inputs, std::nullopt});
  AnalysisOptions options;
  options.num_batches = 2;
  options.activation_samples = 32;
  auto r = AnalyzeQuantization(*m->sim, unlabelled, options);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->score, "output_sqnr_db");
  EXPECT_TRUE(std::isnan(r->fp32));
  EXPECT_EQ(r->eval_samples, 200);
  auto figures = EvaluateSim(*m->sim, unlabelled, 2);
  ASSERT_THAT(figures, IsOk());
  EXPECT_NEAR(r->quantized, figures->at("output_sqnr_db"), 1e-9);
  EXPECT_GT(r->weights_only, r->quantized);
  for (const LayerAnalysis& l : r->layers) {
    // Quantizing one group alone keeps the output closer than quantizing all.
    EXPECT_GE(l.only_enabled, r->quantized) << l.group.layer;
    EXPECT_LE(l.only_enabled, kMaxSqnrDb);
  }
}

TEST(QuantAnalyzerTest, BadInputIsRefused) {
  auto m = Load();
  AnalysisOptions options;
  EXPECT_THAT(AnalyzeQuantization(*m->sim, {}, options),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("no evaluation batches")));
  options.histogram_bins = 1;
  EXPECT_THAT(AnalyzeQuantization(*m->sim, m->batches, options),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("histogram_bins")));
  // An uncalibrated simulation.
  QuantSimOptions o;
  auto fresh = QuantSim::Create(m->graph, o);
  ASSERT_THAT(fresh, IsOk());
  EXPECT_THAT(AnalyzeQuantization(**fresh, m->batches, AnalysisOptions{}),
              StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::HasSubstr("calibrate first")));
}

std::string AnalyzeRecipe(const std::string& steps) {
  return ::qopt::testing::SmallCnnRecipe(R"({"param_bitwidth": 4, "activation_bitwidth": 4, "per_channel": true})", steps);
}

// The step as a recipe runs it: the report's rows and series, one artifact per analysis,
// a line per group as it is scored, and the simulation as it was for the next step.
TEST(AnalyzeStepTest, ReportsEveryGroupAndWritesOneFilePerAnalysis) {
  TempDir dir;
  RunOptions options;
  options.out_dir = dir.File("out");
  std::vector<std::string> lines;
  std::vector<v1::LayerRow> streamed;
  options.on_progress = [&](const Progress& p) {
    if (p.log && p.stage == "analyze") lines.push_back(p.message);
    if (p.layer_row) streamed.push_back(*p.layer_row);
  };
  auto recipe = ParseRecipeJson(AnalyzeRecipe(R"([{"fold_batch_norm": {}}, {"calibrate": {}}, {"evaluate": {}},
      {"analyze": {"histogram_bins": 16, "activation_samples": 100}}, {"evaluate": {}}])"));
  ASSERT_THAT(recipe, IsOk());
  auto run = RunRecipe(*recipe, options);
  ASSERT_THAT(run, IsOk());
  const v1::StepReport& step = run->report.steps(3);
  ASSERT_EQ(step.step(), "analyze");
  EXPECT_EQ(step.figures().at("quantized"), run->report.steps(2).figures().at("top1"));
  EXPECT_EQ(step.figures().at("fp32"), run->report.steps(2).figures().at("fp32_top1"));
  EXPECT_EQ(run->report.steps(4).figures().at("top1"), run->report.steps(2).figures().at("top1"))
      << "the analysis left the simulation changed";
  const int groups = static_cast<int>(step.figures().at("groups"));
  EXPECT_EQ(step.layers_size(), groups);
  EXPECT_EQ(step.figures().at("evaluations"), 3 + 2 * groups);
  EXPECT_EQ(static_cast<int>(lines.size()), groups + 1);  // one per group, then the summary
  // Each group's row went out typed as soon as it was measured, as the report keeps it.
  ASSERT_EQ(static_cast<int>(streamed.size()), groups);
  for (int g = 0; g < groups; ++g) {
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(streamed[g], step.layers(g))) << step.layers(g).layer();
  }
  int weight_ranges = 0, histograms = 0;
  for (const v1::Series& s : step.series()) {
    weight_ranges += s.name().find("weight max per channel") != std::string::npos;
    if (s.name().find("histogram") != std::string::npos) {
      ++histograms;
      EXPECT_EQ(s.y_size(), 16) << s.name();
    }
  }
  int with_weights = 0;
  for (const v1::LayerRow& row : step.layers()) {
    with_weights += row.figures().count("weight_max") ? 1 : 0;
    EXPECT_TRUE(row.figures().count("only_enabled") && row.figures().count("only_disabled")) << row.layer();
  }
  EXPECT_EQ(weight_ranges, with_weights);
  EXPECT_EQ(histograms, with_weights + groups);
  for (const char* name : {"scores", "layer_errors", "ranges", "histograms"}) {
    std::ifstream in(dir.File(absl::StrCat("out/analysis_", name, ".json")));
    ASSERT_TRUE(in.good()) << name;
    const auto js = nlohmann::json::parse(in);
    EXPECT_EQ(js["layers"].size(), static_cast<size_t>(groups)) << name;
  }
}

TEST(AnalyzeStepTest, NeedsACalibratedSimulationAndSaneOptions) {
  auto before = ParseRecipeJson(AnalyzeRecipe(R"([{"analyze": {}}, {"calibrate": {}}])"));
  ASSERT_THAT(before, IsOk());
  EXPECT_THAT(RunRecipe(*before, RunOptions{}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("calibrate")));
  auto bins = ParseRecipeJson(AnalyzeRecipe(R"([{"calibrate": {}}, {"analyze": {"histogram_bins": 5000}}])"));
  ASSERT_THAT(bins, IsOk());
  EXPECT_THAT(RunRecipe(*bins, RunOptions{}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("analyze.histogram_bins must be in 2..1024")));
  auto twice = ParseRecipeJson(AnalyzeRecipe(R"([{"calibrate": {}}, {"analyze": {}}, {"analyze": {}}])"));
  ASSERT_THAT(twice, IsOk());
  EXPECT_THAT(RunRecipe(*twice, RunOptions{}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("prefix")));
}

}  // namespace
}  // namespace qopt
