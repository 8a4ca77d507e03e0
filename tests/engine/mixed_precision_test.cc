// Mixed precision on the zoo's small CNN with real Fashion-MNIST images: bit-ops are MACs x
// weight bits x input activation bits, the search meets its target and leaves the
// simulation at the mix it reports, its scores equal the simulation set by hand, an
// interrupted search resumes from its scores to the same choice, and the quantsim config
// the step writes rebuilds the same mix in a later job.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "analysis/mixed_precision.h"
#include "eval/evaluate.h"
#include "ir/cost_model.h"
#include "ir/import.h"
#include "ir/shape_inference.h"
#include "quant/quantsim_config.h"
#include "recipe/runner.h"
#include "recipe_check.h"
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
  o.per_channel = true;
  return ::qopt::testing::LoadCalibratedSmallCnn(o);
}

void SetBits(QuantSim& sim, int vid, int bits) {
  QuantizerChange c;
  c.bitwidth = bits;
  ASSERT_THAT(sim.ChangeQuantizer(vid, c), IsOk());
}

MixedPrecisionOptions Options(const Model& m) {
  MixedPrecisionOptions o;
  o.candidates = {{8, 8}, {8, 4}, {4, 4}};  // W8A8, W4A8, W4A4
  o.allowed_drop = 0.01;
  o.macs = m.macs;
  return o;
}

TEST(BitOpsTest, AreMacsTimesWeightBitsTimesTheBitsOfTheLayersInput) {
  auto m = Load();
  QuantSim& sim = *m->sim;
  std::vector<const Node*> layers = sim.QuantizedWeightLayers();
  ASSERT_GE(layers.size(), 3u);
  int64_t macs = 0;
  for (const Node* n : layers) macs += m->macs.at(n->name);
  ASSERT_GT(macs, 0);
  // W8A8 everywhere: every conv / linear input comes from an 8-bit quantizer.
  EXPECT_DOUBLE_EQ(BitOps(sim, m->macs), 64.0 * static_cast<double>(macs));

  // 4-bit weights on the second layer take half its bit-ops off.
  const Node* second = layers[1];
  SetBits(sim, second->Param("weight"), 4);
  EXPECT_DOUBLE_EQ(BitOps(sim, m->macs), 64.0 * macs - 32.0 * m->macs.at(second->name));

  // 4-bit activations before the third layer's input halve its bit-ops: the quantizer is
  // found through the ReLUs, pools and reshapes between them.
  const Node* third = layers[2];
  int vid = third->inputs[0];
  while (!sim.activation_quantizers().count(vid)) vid = m->graph.nodes[m->graph.values[vid].producer].inputs[0];
  SetBits(sim, vid, 4);
  double expected = 64.0 * macs - 32.0 * m->macs.at(second->name) - 32.0 * m->macs.at(third->name);
  EXPECT_DOUBLE_EQ(BitOps(sim, m->macs), expected);

  // A weight no quantizer covers counts 32 bits.
  QuantizerChange off;
  off.enabled = false;
  ASSERT_THAT(sim.ChangeQuantizer(layers[0]->Param("weight"), off), IsOk());
  expected += (32.0 - 8.0) * 8.0 * m->macs.at(layers[0]->name);
  EXPECT_DOUBLE_EQ(BitOps(sim, m->macs), expected);
}

// In zoo vit_tiny the attention output reaches its projection through transpose and
// reshape, and the class token reaches the head through slicing: the bits that count are
// those of the quantizer before them.
TEST(BitOpsTest, FollowDataMovementBackToTheQuantizerBeforeALayer) {
  auto g = ImportTorchScript(::qopt::testing::SourcePath("zoo/vit_tiny.pt"));
  ASSERT_THAT(g, IsOk());
  ASSERT_THAT(InferShapes(*g, {{1, 1, 28, 28}}), IsOk());
  auto cost = CountCost(*g);
  ASSERT_THAT(cost, IsOk());
  std::map<std::string, int64_t> macs;
  for (const LayerCost& l : cost->layers) macs[l.layer] = l.macs;
  auto sim = QuantSim::Create(*g, QuantSimOptions());
  ASSERT_THAT(sim, IsOk());
  at::manual_seed(0);
  at::NoGradGuard no_grad;
  ASSERT_THAT((*sim)->ObserveBatch({at::randn({8, 1, 28, 28})}), IsOk());
  ASSERT_THAT((*sim)->FinishCalibration(), IsOk());
  double total = 0;
  for (const Node* n : (*sim)->QuantizedWeightLayers()) total += static_cast<double>(macs.at(n->name));
  ASSERT_GT(total, 0);
  EXPECT_DOUBLE_EQ(BitOps(**sim, macs), 64.0 * total) << "W8A8: every layer's input is 8-bit";

  const Node* proj = g->FindNode("blocks.0.attn.proj");
  ASSERT_NE(proj, nullptr);
  int vid = proj->inputs[0];
  while (!(*sim)->activation_quantizers().count(vid)) vid = g->nodes[g->values[vid].producer].inputs[0];
  EXPECT_EQ(g->nodes[g->values[vid].producer].name, "blocks.0.attn.matmul_1");
  SetBits(**sim, vid, 4);
  EXPECT_DOUBLE_EQ(BitOps(**sim, macs), 64.0 * total - 32.0 * macs.at("blocks.0.attn.proj"));
}

TEST(MixedPrecisionTest, MeetsTheTargetAndLeavesTheSimulationAtTheMixItReports) {
  at::NoGradGuard no_grad;
  auto m = Load();
  QuantSim& sim = *m->sim;
  const double reference = BitOps(sim, m->macs);
  std::vector<int> streamed_groups;
  std::vector<ParetoPoint> streamed_points;
  MixedPrecisionCallbacks callbacks;
  callbacks.on_group = [&](const MixedPrecisionResult&, int g) {
    streamed_groups.push_back(g);
    return absl::OkStatus();
  };
  callbacks.on_point = [&](const ParetoPoint& p) {
    streamed_points.push_back(p);
    return absl::OkStatus();
  };
  auto r = ChooseMixedPrecision(sim, m->batches, Options(*m), {}, callbacks);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->score, "top1");
  EXPECT_EQ(r->candidates[r->largest].Name(), "W8A8");
  EXPECT_DOUBLE_EQ(r->largest_relative_bitops, 1.0);
  EXPECT_DOUBLE_EQ(r->target, r->fp32 - 0.01);
  ASSERT_TRUE(r->met_target);
  EXPECT_GE(r->chosen_score, r->target);
  EXPECT_LT(r->chosen_relative_bitops, 0.9) << "the small CNN keeps its accuracy with some layers lowered";
  EXPECT_EQ(streamed_groups.size(), r->groups.size());

  // The simulation is at the chosen mix: its bit-ops and its top-1 are the reported ones.
  EXPECT_NEAR(BitOps(sim, m->macs) / reference, r->chosen_relative_bitops, 1e-12);
  EXPECT_DOUBLE_EQ(Top1(sim, m->batches), r->chosen_score);
  int lowered = 0;
  for (size_t g = 0; g < r->groups.size(); ++g) {
    const BitCandidate& c = r->candidates[r->choice[g]];
    lowered += r->choice[g] != r->largest;
    for (int vid : r->groups[g].activations) EXPECT_EQ(sim.activation_quantizers().at(vid).spec().bitwidth, c.activation_bits);
    const Node* layer = m->graph.FindNode(r->groups[g].layer);
    if (layer != nullptr && layer->Param("weight") >= 0 && sim.param_quantizers().count(layer->Param("weight"))) {
      EXPECT_EQ(sim.param_quantizers().at(layer->Param("weight")).spec().bitwidth, c.param_bits) << r->groups[g].layer;
    }
  }
  EXPECT_GT(lowered, 0);

  // Every evaluation is counted once: the largest candidate, phase 1, phase 2's points.
  EXPECT_EQ(r->evaluations, 1 + static_cast<int>(r->phase1.size()) + static_cast<int>(r->pareto.size()) - 1);
  EXPECT_EQ(r->cached, 0);
  EXPECT_EQ(streamed_points.size(), r->pareto.size());
  EXPECT_LE(static_cast<int>(r->pareto.size()) - 1, static_cast<int>(std::ceil(std::log2(r->order.size() + 1.0))));
  for (size_t i = 1; i < r->pareto.size(); ++i) EXPECT_GE(r->pareto[i - 1].relative_bitops, r->pareto[i].relative_bitops);
  // Phase 2's order is by phase-1 score, best first.
  for (size_t i = 1; i < r->order.size(); ++i) EXPECT_GE(r->phase1[r->order[i - 1]].score, r->phase1[r->order[i]].score);
  // A group with a weight and an output takes both lower candidates; one with either only
  // (the input, pools) takes the one that changes it, once.
  for (size_t g = 0; g < r->groups.size(); ++g) {
    int entries = 0;
    for (const GroupScore& e : r->phase1) entries += e.group == static_cast<int>(g);
    EXPECT_EQ(entries, r->groups[g].params.empty() || r->groups[g].activations.empty() ? 1 : 2) << r->groups[g].layer;
  }

  // A phase-1 score by hand: the first conv's group at W4A4 with everything else at W8A8.
  const GroupScore* entry = nullptr;
  for (const GroupScore& e : r->phase1) {
    if (entry == nullptr && r->groups[e.group].op_type == "Conv" && r->candidates[e.candidate].Name() == "W4A4") entry = &e;
  }
  ASSERT_NE(entry, nullptr);
  for (const auto& [vid, q] : sim.activation_quantizers()) SetBits(sim, vid, 8);
  for (const auto& [vid, q] : sim.param_quantizers()) SetBits(sim, vid, 8);
  const QuantizerGroup& group = r->groups[entry->group];
  SetBits(sim, m->graph.FindNode(group.layer)->Param("weight"), 4);
  for (int vid : group.activations) SetBits(sim, vid, 4);
  EXPECT_DOUBLE_EQ(Top1(sim, m->batches), entry->score);
  EXPECT_NEAR(BitOps(sim, m->macs) / reference, entry->relative_bitops, 1e-12);
}

TEST(MixedPrecisionTest, AnInterruptedSearchResumesFromItsScoresToTheSameChoice) {
  at::NoGradGuard no_grad;
  auto straight = Load();
  auto full = ChooseMixedPrecision(*straight->sim, straight->batches, Options(*straight));
  ASSERT_THAT(full, IsOk());

  auto first = Load();
  MixedPrecisionCache saved;
  int scores = 0;
  MixedPrecisionCallbacks dies;
  dies.on_score = [&](const MixedPrecisionCache& known) {
    saved = known;
    return ++scores == 5 ? absl::CancelledError("stopped") : absl::OkStatus();
  };
  EXPECT_THAT(ChooseMixedPrecision(*first->sim, first->batches, Options(*first), {}, dies),
              StatusIs(absl::StatusCode::kCancelled, ::testing::_));
  EXPECT_EQ(saved.configs.size() + saved.phase1.size(), 5u);

  auto second = Load();
  auto resumed = ChooseMixedPrecision(*second->sim, second->batches, Options(*second), saved);
  ASSERT_THAT(resumed, IsOk());
  EXPECT_EQ(resumed->cached, 5);
  EXPECT_EQ(resumed->evaluations + resumed->cached, full->evaluations);
  EXPECT_EQ(resumed->choice, full->choice);
  EXPECT_DOUBLE_EQ(resumed->chosen_score, full->chosen_score);
  EXPECT_DOUBLE_EQ(resumed->chosen_relative_bitops, full->chosen_relative_bitops);
}

TEST(MixedPrecisionTest, WithoutLabelsTheDropIsDecibelsOfOutputSqnrBelowTheLargestCandidate) {
  at::NoGradGuard no_grad;
  auto m = Load();
  std::vector<Batch> unlabelled;
  for (const Batch& b : m->batches) unlabelled.push_back(Batch{b.inputs, std::nullopt});
  MixedPrecisionOptions o = Options(*m);
  o.allowed_drop = 3.0;
  o.num_batches = 2;
  auto r = ChooseMixedPrecision(*m->sim, unlabelled, o);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->score, "output_sqnr_db");
  EXPECT_TRUE(std::isnan(r->fp32));
  EXPECT_DOUBLE_EQ(r->target, r->largest_score - 3.0);
  EXPECT_GE(r->chosen_score, r->target);
  EXPECT_EQ(r->samples, 200);
}

TEST(MixedPrecisionTest, BadInputIsRefused) {
  auto m = Load();
  MixedPrecisionOptions o = Options(*m);
  o.candidates = {{8, 8}};
  EXPECT_THAT(ChooseMixedPrecision(*m->sim, m->batches, o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("two or more")));
  o = Options(*m);
  o.candidates.push_back({17, 8});
  EXPECT_THAT(ChooseMixedPrecision(*m->sim, m->batches, o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2..16")));
  o = Options(*m);
  EXPECT_THAT(ChooseMixedPrecision(*m->sim, {}, o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no batches")));
  auto fresh = QuantSim::Create(m->graph, QuantSimOptions{});
  ASSERT_THAT(fresh, IsOk());
  EXPECT_THAT(ChooseMixedPrecision(**fresh, m->batches, o),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("calibrate first")));
}

TEST(QuantSimConfigTest, WrittenConfigReadsBackToTheSameConfig) {
  QuantSimConfig c = QuantSimConfig::Default();
  c.layers["conv1"].bitwidth = 4;
  c.layers["conv1"].params["weight"].bitwidth = 2;
  c.op_types["Gemm"].per_channel_quantization = false;
  c.model_input_bitwidth = 16;
  const std::string text = QuantSimConfigToJson(c);
  auto back = ParseQuantSimConfig(text);
  ASSERT_THAT(back, IsOk());
  EXPECT_EQ(QuantSimConfigToJson(*back), text);
  EXPECT_EQ(back->layers.at("conv1").bitwidth, 4);
  EXPECT_EQ(back->layers.at("conv1").params.at("weight").bitwidth, 2);
  EXPECT_EQ(back->model_input_bitwidth, 16);
  EXPECT_EQ(back->supergroups, c.supergroups);
  EXPECT_THAT(ParseQuantSimConfig(R"({"model_input": {"is_input_quantized": true, "bitwidth": 1}})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("model_input.bitwidth")));
}

std::string Recipe(const std::string& quantization, const std::string& steps) {
  return ::qopt::testing::SmallCnnRecipe(quantization, steps);
}

constexpr char kSearch[] = R"({"mixed_precision": {"candidates": [{"activation_bits": 8, "param_bits": 8},
    {"activation_bits": 8, "param_bits": 4}, {"activation_bits": 4, "param_bits": 4}], "allowed_drop": 0.01,
    "data": {"path": "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz",
             "labels_path": "/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz",
             "max_samples": 500, "batch_size": 250, "preprocess": {"mean": [0.286], "std": [0.353]}}}})";

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The step as a recipe runs it: rows streamed per group, the report's pareto curve, and a
// config that makes a later job build the same mix (same encodings, same accuracy) from
// a recipe with other bitwidths.
TEST(MixedPrecisionStepTest, ItsConfigRebuildsTheSameMixInALaterJob) {
  TempDir dir;
  RunOptions options;
  options.out_dir = dir.File("search");
  int rows = 0;
  options.on_progress = [&](const Progress& p) { rows += p.layer_row && p.stage == "mixed_precision"; };
  auto recipe = ParseRecipeJson(Recipe(R"({"per_channel": true})", absl::StrCat(R"([{"fold_batch_norm": {}}, {"calibrate": {}}, )",
                                                                               kSearch, R"(, {"evaluate": {}}, {"export": {}}])")));
  ASSERT_THAT(recipe, IsOk());
  auto run = RunRecipe(*recipe, options);
  ASSERT_THAT(run, IsOk());
  const v1::StepReport& step = run->report.steps(2);
  ASSERT_EQ(step.step(), "mixed_precision");
  const int groups = static_cast<int>(step.figures().at("groups"));
  EXPECT_EQ(rows, groups);
  EXPECT_EQ(step.layers_size(), groups);
  EXPECT_EQ(step.figures().at("met_target"), 1);
  EXPECT_LT(step.figures().at("chosen_relative_bitops"), 1.0);
  EXPECT_GT(step.figures().at("lowered_groups"), 0);
  ASSERT_EQ(step.series_size(), 1);
  EXPECT_EQ(step.series(0).name(), "pareto");
  const std::string html = ReadText(dir.File("search/report.html"));
  EXPECT_THAT(html, HasSubstr(R"(id="step-3-pareto")"));
  auto results = nlohmann::json::parse(ReadText(dir.File("search/mixed_precision.json")));
  EXPECT_EQ(results["pareto"].size(), static_cast<size_t>(step.series(0).x_size()));
  EXPECT_EQ(results["groups"].size(), static_cast<size_t>(groups));

  // A later job: the config, recipe bitwidths that differ, no search.
  const std::string config = dir.File("search/mixed_precision_config.json");
  options.out_dir = dir.File("again");
  auto again_recipe =
      ParseRecipeJson(Recipe(absl::StrCat(R"({"per_channel": true, "param_bitwidth": 6, "activation_bitwidth": 6, "config_path": ")",
                                          config, R"("})"),
                             R"([{"fold_batch_norm": {}}, {"calibrate": {}}, {"evaluate": {}}, {"export": {}}])"));
  ASSERT_THAT(again_recipe, IsOk());
  auto again = RunRecipe(*again_recipe, options);
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(again->report.steps(2).figures().at("top1"), run->report.steps(3).figures().at("top1"));
  // Every tensor's encoding is the same; only the recipe's defaults, which no quantizer
  // took, differ.
  nlohmann::json first = nlohmann::json::parse(ReadText(dir.File("search/model.encodings")));
  nlohmann::json second = nlohmann::json::parse(ReadText(dir.File("again/model.encodings")));
  EXPECT_EQ(second["quantizer_args"]["param_bitwidth"], 6);
  first.erase("quantizer_args");
  second.erase("quantizer_args");
  EXPECT_EQ(first, second);
}

// A job cancelled during the search keeps its scores in the checkpoint; run again, it
// takes them from there and chooses what an uninterrupted job chooses.
TEST(MixedPrecisionStepTest, ACancelledJobResumesTheSearchFromItsCheckpoint) {
  TempDir dir;
  const std::string steps = absl::StrCat(R"([{"fold_batch_norm": {}}, {"calibrate": {}}, )", kSearch, "]");
  auto recipe = ParseRecipeJson(Recipe(R"({"per_channel": true})", steps));
  ASSERT_THAT(recipe, IsOk());
  RunOptions straight;
  straight.out_dir = dir.File("straight");
  auto full = RunRecipe(*recipe, straight);
  ASSERT_THAT(full, IsOk());

  RunOptions options;
  options.out_dir = dir.File("resumed");
  options.checkpoint_path = dir.File("checkpoint");
  int rows = 0;
  options.on_progress = [&](const Progress& p) { rows += p.layer_row ? 1 : 0; };
  options.cancelled = [&] { return rows >= 3; };
  EXPECT_THAT(RunRecipe(*recipe, options), StatusIs(absl::StatusCode::kCancelled, ::testing::_));
  options.cancelled = nullptr;
  auto resumed = RunRecipe(*recipe, options);
  ASSERT_THAT(resumed, IsOk());
  const auto& a = full->report.steps(2).figures();
  const auto& b = resumed->report.steps(2).figures();
  EXPECT_GT(b.at("cached_evaluations"), 3);
  EXPECT_EQ(b.at("evaluations") + b.at("cached_evaluations"), a.at("evaluations"));
  EXPECT_EQ(b.at("chosen_score"), a.at("chosen_score"));
  EXPECT_EQ(b.at("chosen_relative_bitops"), a.at("chosen_relative_bitops"));
  EXPECT_EQ(ReadText(dir.File("resumed/mixed_precision_config.json")), ReadText(dir.File("straight/mixed_precision_config.json")));
}

TEST(MixedPrecisionStepTest, RecipeChecksNameTheProblem) {
  auto check = [](const std::string& steps) { return CheckRecipe(*ParseRecipeJson(Recipe("{}", steps))); };
  EXPECT_THAT(check(R"([{"mixed_precision": {}}])"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs a calibrate step")));
  EXPECT_THAT(check(R"([{"calibrate": {}}, {"adaround": {}}, {"mixed_precision": {}}])"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("must come before adaround")));
  EXPECT_THAT(check(R"([{"calibrate": {}}, {"mixed_precision": {"candidates": [{"activation_bits": 8, "param_bits": 8}]}}])"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at least two")));
  EXPECT_THAT(check(R"([{"calibrate": {}}, {"mixed_precision": {"candidates": [{"activation_bits": 8, "param_bits": 1},
                        {"activation_bits": 8, "param_bits": 8}]}}])"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("candidates[0].param_bits must be in 2..16")));
  EXPECT_THAT(check(R"([{"calibrate": {}}, {"mixed_precision": {"candidates": [{"activation_bits": 8, "param_bits": 8},
                        {"activation_bits": 8, "param_bits": 8}]}}])"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("repeats W8A8")));
  EXPECT_THAT(check(R"([{"calibrate": {}}, {"mixed_precision": {"allowed_drop": -1}}])"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("allowed_drop must be > 0")));
  EXPECT_THAT(check(R"([{"calibrate": {}}, {"mixed_precision": {"curve_points": 65}}])"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("curve_points must be in 0..64")));
  EXPECT_THAT(check(R"([{"calibrate": {}}, {"mixed_precision": {}}, {"adaround": {}}, {"export": {}}])"), IsOk());
}

}  // namespace
}  // namespace qopt
