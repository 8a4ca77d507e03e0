// Control flow that freezing cannot remove (a data-dependent branch and loop in a scripted
// model) and architectures that used to abort the worker (ShuffleNetV2's channel shuffle
// computes with integer tensors): both run, quantize and export.
#include <ATen/ATen.h>
#include <torch/script.h>

#include "export/torchscript_export.h"
#include "ir/import.h"
#include "ir/interpreter.h"
#include "ir/shape_inference.h"
#include "ir/verify.h"
#include "quant/quantsim.h"
#include "test_util.h"

namespace qopt {
namespace {

using ::qopt::testing::Fixture;
using ::qopt::testing::IsOk;

double RelativeError(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).norm() / b.norm()).item<double>();
}

// Inputs that take each way through ControlFlowNet: mean above / below zero, std above /
// below one (one or two loop iterations).
std::vector<at::Tensor> BranchInputs() {
  at::manual_seed(11);
  const at::Tensor base = at::randn({4, 3, 16, 16});
  return {base * 0.5 + 0.3, base * 2.0 + 0.3, base * 0.5 - 0.3, base * 2.0 - 0.3};
}

TEST(ControlFlow, BranchAndLoopRunLikeTorchScript) {
  auto g = ImportTorchScript(Fixture("control_flow.pt"));
  ASSERT_THAT(g, IsOk());
  ASSERT_THAT(Verify(*g), IsOk());
  int blocks = 0;
  for (const Node* n : g->LiveNodes()) blocks += n->kind == OpKind::kIf || n->kind == OpKind::kLoop;
  EXPECT_GE(blocks, 2) << g->ToString();
  torch::jit::Module module = torch::jit::load(Fixture("control_flow.pt"));
  module.eval();
  at::NoGradGuard no_grad;
  const Interpreter interpreter(*g);
  for (const at::Tensor& x : BranchInputs()) {
    auto ours = interpreter.Forward(x);
    ASSERT_THAT(ours, IsOk());
    const at::Tensor theirs = module.forward({x}).toTensor();
    EXPECT_LE(RelativeError(*ours, theirs), 1e-5);
  }
}

TEST(ControlFlow, QuantizersSitInsideBlocksAndExportRuns) {
  auto g = ImportTorchScript(Fixture("control_flow.pt"));
  ASSERT_THAT(g, IsOk());
  at::NoGradGuard no_grad;
  auto sim = QuantSim::Create(*g, QuantSimOptions{});
  ASSERT_THAT(sim, IsOk());
  const auto inputs = BranchInputs();
  for (const at::Tensor& x : inputs) ASSERT_THAT((*sim)->ObserveBatch({x}), IsOk());
  ASSERT_THAT((*sim)->FinishCalibration(), IsOk());
  int inside = 0;
  for (const auto& [vid, q] : (*sim)->activation_quantizers()) {
    const int producer = g->values[vid].producer;
    inside += producer >= 0 && g->nodes[producer].parent >= 0 && q.has_encodings();
  }
  EXPECT_GE(inside, 3) << "bright, dark and refine outputs are quantized inside their blocks";
  qopt::testing::TempDir dir;
  ASSERT_THAT(ExportTorchScript(*g, sim->get(), dir.File("q.pt")), IsOk());
  torch::jit::Module exported = torch::jit::load(dir.File("q.pt"));
  for (const at::Tensor& x : inputs) {
    auto simulated = (*sim)->Forward(x);
    ASSERT_THAT(simulated, IsOk());
    auto fp32 = (*sim)->ForwardFloat(x);
    ASSERT_THAT(fp32, IsOk());
    EXPECT_GT(RelativeError(*simulated, *fp32), 1e-5) << "quantization changes something";
    EXPECT_LE(RelativeError(exported.forward({x}).toTensor(), *simulated), 1e-5);
  }
}

TEST(ControlFlow, ShapesOfTheBranchTaken) {
  auto g = ImportTorchScript(Fixture("control_flow.pt"));
  ASSERT_THAT(g, IsOk());
  ASSERT_THAT(InferShapes(*g, {{2, 3, 16, 16}}), IsOk());
  const Node* stem = g->FindNode("stem");
  ASSERT_NE(stem, nullptr) << g->ToString();
  EXPECT_EQ(*g->values[stem->outputs[0]].shape, (std::vector<int64_t>{2, 8, 16, 16}));
  EXPECT_EQ(*g->values[g->outputs()[0]].shape, (std::vector<int64_t>{2, 10}));
  EXPECT_EQ(*g->values[g->outputs()[0]].dtype, at::kFloat);
}

TEST(IntegerTensors, ShuffleNetGetsQuantizersOnFloatsOnly) {
  auto g = ImportTorchScript(Fixture("shufflenet_v2.pt"));
  ASSERT_THAT(g, IsOk());
  at::NoGradGuard no_grad;
  at::manual_seed(5);
  const at::Tensor x = at::randn({2, 3, 64, 64});
  // Without shapes, placement cannot tell integer tensors apart; calibration drops them.
  for (bool infer : {false, true}) {
    Graph graph = g->Clone();
    if (infer) ASSERT_THAT(InferShapes(graph, {{1, 3, 64, 64}}), IsOk());
    auto sim = QuantSim::Create(graph, QuantSimOptions{});
    ASSERT_THAT(sim, IsOk());
    ASSERT_THAT((*sim)->ObserveBatch({x}), IsOk());
    ASSERT_THAT((*sim)->FinishCalibration(), IsOk());
    for (const auto& [vid, q] : (*sim)->activation_quantizers()) {
      if (graph.values[vid].dtype) EXPECT_TRUE(at::isFloatingType(*graph.values[vid].dtype)) << graph.values[vid].name;
    }
    auto out = (*sim)->Forward(x);
    ASSERT_THAT(out, IsOk());
    auto fp32 = (*sim)->ForwardFloat(x);
    ASSERT_THAT(fp32, IsOk());
    EXPECT_LE(RelativeError(*out, *fp32), 0.5) << "W8A8 stays close to FP32";
  }
}

}  // namespace
}  // namespace qopt
