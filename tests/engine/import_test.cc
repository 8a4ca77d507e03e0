// TorchScript import and the interpreter: IR structure, names, FP32 parity with
// Module::forward, and errors for files that are not runnable models.
#include "ir/import.h"

#include <cstdio>
#include <filesystem>
#include <set>

#include <ATen/ATen.h>
#include <torch/script.h>

#include "data/tensor_file.h"
#include "ir/interpreter.h"
#include "test_util.h"

namespace qopt {
namespace {

using ::qopt::testing::Fixture;
using ::qopt::testing::IsOk;
using ::qopt::testing::StatusIs;
using ::testing::HasSubstr;

at::Tensor CalibrationBatch(int n) {
  auto data = LoadNpy(Fixture("calib.npy"));
  EXPECT_THAT(data, IsOk());
  return data->slice(0, 0, n);
}

TEST(ImportTest, ResNet18LayersCarryModuleNamesAndParameters) {
  auto g = ImportTorchScript(Fixture("resnet18.pt"));
  ASSERT_THAT(g, IsOk());
  const Node* conv = g->FindNode("layer1.0.conv1");
  ASSERT_NE(conv, nullptr);
  EXPECT_EQ(conv->kind, OpKind::kConv);
  const int w = conv->Param("weight");
  ASSERT_GE(w, 0);
  EXPECT_EQ(g->values[w].name, "layer1.0.conv1.weight");
  EXPECT_EQ(g->values[w].constant->toTensor().sizes(), (std::vector<int64_t>{64, 64, 3, 3}));
  EXPECT_EQ(conv->Param("bias"), -1);  // torchvision convs have no bias

  const Node* bn = g->FindNode("layer1.0.bn1");
  ASSERT_NE(bn, nullptr);
  EXPECT_EQ(bn->kind, OpKind::kBatchNorm);
  EXPECT_EQ(g->values[bn->inputs[0]].producer, conv->id);
  EXPECT_THAT(g->values[conv->outputs[0]].consumers, ::testing::Contains(bn->id));
  EXPECT_EQ(g->values[bn->Param("running_var")].name, "layer1.0.bn1.running_var");

  // A functional add inside a block, and a reused ReLU module named per call.
  EXPECT_NE(g->FindNode("layer1.0.add"), nullptr);
  EXPECT_NE(g->FindNode("layer1.0.relu"), nullptr);
  EXPECT_NE(g->FindNode("layer1.0.relu_1"), nullptr);
  EXPECT_NE(g->FindNode("fc"), nullptr);
  EXPECT_EQ(g->FindNode("fc")->kind, OpKind::kLinear);
}

// Items of a ModuleList are indexed, never called, so the call stack names them without
// their list; scripted and traced models get the full path alike.
TEST(ImportTest, ScriptedAndTracedModelsGetTheSameFullLayerNames) {
  std::vector<std::set<std::string>> names;
  for (const char* file : {"stacked_scripted.pt", "stacked_traced.pt"}) {
    auto g = ImportTorchScript(Fixture(file));
    ASSERT_THAT(g, IsOk()) << file;
    std::set<std::string> layers;
    for (const Node* n : g->LiveNodes()) layers.insert(n->name);
    for (const char* layer : {"stem", "block1.conv1", "block1.bn1", "block1.conv2", "layers.0.conv1", "layers.0.bn1",
                              "layers.0.conv2", "layers.1.0", "layers.1.1", "fc"}) {
      EXPECT_TRUE(layers.count(layer)) << file << " lacks layer " << layer;
    }
    EXPECT_EQ(g->values[g->FindNode("layers.0.conv1")->Param("weight")].name, "layers.0.conv1.weight") << file;
    names.push_back(layers);
  }
  EXPECT_EQ(names[0], names[1]);
}

TEST(ImportTest, LayersOwnTheirParametersEvenWhenTensorsAreEqual) {
  auto g = ImportTorchScript(Fixture("resnet18.pt"));
  ASSERT_THAT(g, IsOk());
  std::set<int> ids;
  int count = 0;
  for (const Node* n : g->LiveNodes()) {
    for (const auto& [role, id] : n->params) {
      ids.insert(id);
      ++count;
    }
  }
  EXPECT_EQ(static_cast<int>(ids.size()), count);
}

class ParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ParityTest, InterpreterMatchesModuleForward) {
  const std::string path = Fixture(GetParam());
  auto g = ImportTorchScript(path);
  ASSERT_THAT(g, IsOk());
  torch::jit::Module module = torch::jit::load(path);
  module.eval();
  at::NoGradGuard no_grad;
  const at::Tensor x = CalibrationBatch(4);
  const at::Tensor expected = module.forward({x}).toTensor();
  Interpreter interpreter(*g);
  auto got = interpreter.Forward(x);
  ASSERT_THAT(got, IsOk());
  ASSERT_EQ(got->sizes(), expected.sizes());
  const double max_abs = expected.abs().max().item<double>();
  const double diff = (*got - expected).abs().max().item<double>();
  EXPECT_LE(diff, 1e-5 * max_abs) << GetParam() << ": max |y| " << max_abs;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ParityTest,
                         ::testing::Values("resnet18.pt", "mobilenet_v2.pt", "googlenet.pt",
                                           "small_scripted.pt", "branch.pt"));

TEST(ImportTest, EveryValueReachesTheObserver) {
  auto g = ImportTorchScript(Fixture("small_scripted.pt"));
  ASSERT_THAT(g, IsOk());
  struct Counter : ValueObserver {
    std::set<int> seen;
    void OnValue(const Value& v, c10::IValue&) override { seen.insert(v.id); }
  } counter;
  Interpreter interpreter(*g);
  ASSERT_THAT(interpreter.Forward(CalibrationBatch(2), &counter), IsOk());
  for (const Node* n : g->LiveNodes()) {
    for (int out : n->outputs) EXPECT_TRUE(counter.seen.count(out)) << n->name;
  }
  EXPECT_TRUE(counter.seen.count(g->inputs()[0]));
}

TEST(ImportTest, FinishedObserverStopsTheRun) {
  auto g = ImportTorchScript(Fixture("resnet18.pt"));
  ASSERT_THAT(g, IsOk());
  struct StopAt : ValueObserver {
    int target = -1;
    std::set<int> seen;
    void OnValue(const Value& v, c10::IValue&) override { seen.insert(v.id); }
    bool Finished() const override { return seen.count(target) > 0; }
  } stop;
  stop.target = g->FindNode("layer1.0.conv1")->outputs[0];
  Interpreter interpreter(*g);
  auto out = interpreter.Run({c10::IValue(CalibrationBatch(2))}, &stop);
  ASSERT_THAT(out, IsOk());
  EXPECT_TRUE(out->isNone()) << "no model output after a stop";
  EXPECT_TRUE(stop.seen.count(stop.target));
  EXPECT_FALSE(stop.seen.count(g->FindNode("layer1.0.conv2")->outputs[0])) << "ran past the stop";
  EXPECT_FALSE(stop.seen.count(g->outputs()[0]));
}

TEST(ImportTest, ObserverCanReplaceValues) {
  auto g = ImportTorchScript(Fixture("small_scripted.pt"));
  ASSERT_THAT(g, IsOk());
  struct Zero : ValueObserver {
    int target;
    void OnValue(const Value& v, c10::IValue& iv) override {
      if (v.id == target) iv = at::zeros_like(iv.toTensor());
    }
  } zero;
  zero.target = g->FindNode("fc")->outputs[0];
  Interpreter interpreter(*g);
  auto out = interpreter.Forward(CalibrationBatch(2), &zero);
  ASSERT_THAT(out, IsOk());
  EXPECT_EQ(out->abs().sum().item<double>(), 0.0);
}

TEST(ImportTest, ShapeMismatchNamesTheLayer) {
  auto g = ImportTorchScript(Fixture("resnet18.pt"));
  ASSERT_THAT(g, IsOk());
  Interpreter interpreter(*g);
  EXPECT_THAT(interpreter.Forward(at::randn({1, 1, 64, 64})),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr("conv1"), HasSubstr("channels"))));
  EXPECT_THAT(interpreter.Run({}), StatusIs(absl::StatusCode::kInvalidArgument,
                                            HasSubstr("takes 1 inputs, got 0")));
}

TEST(ImportTest, BadFilesGiveOneLineErrors) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"not_torchscript.pt", "not a TorchScript model"},
      {"truncated.pt", "cannot load TorchScript model"},
      {"unknown_op.pt", "the model uses operator aten::qopt_no_such_op, which is not a built-in tensor operator"},
      {"no_such_file.pt", "model file not found"},
  };
  for (const auto& [file, message] : cases) {
    auto g = ImportTorchScript(Fixture(file));
    EXPECT_THAT(g, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(message))) << file;
    EXPECT_EQ(std::string(g.status().message()).find('\n'), std::string::npos) << file;
  }
}

// Models that reach outside their tensors are refused before any of their code runs
// (tests/fixtures/hostile_models.py); the probe file they would write never appears.
TEST(ImportTest, RefusesModelsThatReachOutsideTheirTensors) {
  const std::string probe = Fixture("hostile_probe_written.pt");
  std::remove(probe.c_str());
  constexpr auto kDenied = absl::StatusCode::kPermissionDenied;
  // Operators TorchScript does not know fail its loader, before anything runs.
  constexpr auto kUnknown = absl::StatusCode::kInvalidArgument;
  const std::vector<std::tuple<std::string, absl::StatusCode, std::string>> cases = {
      {"hostile_from_file.pt", kDenied, "aten::from_file, which reads a file"},
      {"hostile_save.pt", kDenied, "aten::save, which writes a file"},
      {"hostile_setstate.pt", kDenied, "defines __setstate__"},
      {"hostile_print.pt", kDenied, "prim::Print, which prints"},
      {"hostile_custom_op.pt", kUnknown, "operator qopt_probe::leak, which is not a built-in tensor operator"},
      {"hostile_load.pt", kUnknown, "operator aten::load, which is not a built-in tensor operator"},
  };
  for (const auto& [file, code, message] : cases) {
    EXPECT_THAT(ImportTorchScript(Fixture(file)), StatusIs(code, HasSubstr(message))) << file;
  }
  EXPECT_FALSE(std::filesystem::exists(probe));
}

}  // namespace
}  // namespace qopt
