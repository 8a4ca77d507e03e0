#include "passes/batch_norm_fold.h"

#include <ATen/ATen.h>

#include "data/tensor_file.h"
#include "ir/import.h"
#include "ir/interpreter.h"
#include "test_util.h"

namespace qopt {
namespace {

using ::qopt::testing::Fixture;
using ::qopt::testing::IsOk;

class BatchNormFoldTest : public ::testing::TestWithParam<std::string> {};

TEST_P(BatchNormFoldTest, OutputUnchangedAndBatchNormsGone) {
  auto g = ImportTorchScript(Fixture(GetParam()));
  ASSERT_THAT(g, IsOk());
  auto data = LoadNpy(Fixture("calib.npy"));
  ASSERT_THAT(data, IsOk());
  const at::Tensor x = data->slice(0, 0, 8);
  at::NoGradGuard no_grad;
  at::Tensor before;
  {
    Interpreter interpreter(*g);
    auto out = interpreter.Forward(x);
    ASSERT_THAT(out, IsOk());
    before = *out;
  }
  int batch_norms = 0;
  for (const Node* n : g->LiveNodes()) batch_norms += n->kind == OpKind::kBatchNorm;

  auto folded = FoldBatchNorms(*g);
  ASSERT_THAT(folded, IsOk());
  EXPECT_EQ(static_cast<int>(folded->size()), batch_norms) << "every BN here follows a conv";
  for (const Node* n : g->LiveNodes()) EXPECT_NE(n->kind, OpKind::kBatchNorm) << n->name;

  Interpreter interpreter(*g);
  auto after = interpreter.Forward(x);
  ASSERT_THAT(after, IsOk());
  const double rel = ((*after - before).norm() / before.norm()).item<double>();
  EXPECT_LE(rel, 1e-4) << GetParam();
  EXPECT_LE((*after - before).abs().max().item<double>(),
            1e-4 * before.abs().max().item<double>());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, BatchNormFoldTest,
                         ::testing::Values("resnet18.pt", "mobilenet_v2.pt", "googlenet.pt",
                                           "small_scripted.pt"));

TEST(BatchNormFold, FoldedConvGainsBiasAndKeepsItsName) {
  auto g = ImportTorchScript(Fixture("resnet18.pt"));
  ASSERT_THAT(g, IsOk());
  auto folded = FoldBatchNorms(*g);
  ASSERT_THAT(folded, IsOk());
  const Node* conv = g->FindNode("layer1.0.conv1");
  ASSERT_NE(conv, nullptr);
  ASSERT_GE(conv->Param("bias"), 0);
  EXPECT_EQ(g->values[conv->Param("bias")].name, "layer1.0.conv1.bias");
  EXPECT_EQ(g->FindNode("layer1.0.bn1"), nullptr);
  // The loaded tensors were not modified in place: folding twice is a no-op.
  auto again = FoldBatchNorms(*g);
  ASSERT_THAT(again, IsOk());
  EXPECT_TRUE(again->empty());
}

}  // namespace
}  // namespace qopt
