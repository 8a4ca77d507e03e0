// The cost model against counts worked out by hand for torchvision's ResNet18 at
// 1x3x224x224.
#include "ir/cost_model.h"

#include "ir/import.h"
#include "ir/shape_inference.h"
#include "passes/batch_norm_fold.h"
#include "test_util.h"

namespace qopt {
namespace {

using ::qopt::testing::Fixture;
using ::qopt::testing::IsOk;
using ::qopt::testing::StatusIs;
using ::testing::HasSubstr;

const LayerCost* Row(const ModelCost& cost, const std::string& layer) {
  for (const LayerCost& row : cost.layers) {
    if (row.layer == layer) return &row;
  }
  return nullptr;
}

TEST(CostModel, ResNet18MatchesHandCounts) {
  auto g = ImportTorchScript(Fixture("resnet18.pt"));
  ASSERT_THAT(g, IsOk());
  EXPECT_THAT(CountCost(*g), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("shape unknown")));
  ASSERT_THAT(InferShapes(*g, {{1, 3, 224, 224}}), IsOk());
  auto cost = CountCost(*g);
  ASSERT_THAT(cost, IsOk());
  // conv1: 64·112²·(3·7·7) = 118,013,952. layer1: 4 × 64·56²·(64·9) = 462,422,016.
  // layer2..4 each: first 3x3 57,802,752 + three 3x3 115,605,504 + 1x1 downsample
  // 6,422,528 = 411,041,792. fc: 1000·512 = 512,000. Sum: 1,814,073,344.
  EXPECT_EQ(cost->macs, 1814073344);
  // Weights and biases of every conv, batch norm and the fc, as PyTorch counts parameters.
  EXPECT_EQ(cost->parameters, 11689512);
  EXPECT_EQ(cost->parameter_bytes, 11689512 * 4);
  const LayerCost* conv1 = Row(*cost, "conv1");
  ASSERT_NE(conv1, nullptr);
  EXPECT_EQ(conv1->op_type, "Conv");
  EXPECT_EQ(conv1->macs, 118013952);
  EXPECT_EQ(conv1->parameters, 64 * 3 * 7 * 7);
  EXPECT_EQ(conv1->activation_bytes, 64 * 112 * 112 * 4);
  const LayerCost* fc = Row(*cost, "fc");
  ASSERT_NE(fc, nullptr);
  EXPECT_EQ(fc->macs, 512000);
  EXPECT_EQ(fc->parameters, 512 * 1000 + 1000);
  EXPECT_EQ(fc->activation_bytes, 1000 * 4);
  int64_t activations = 0;
  for (const LayerCost& row : cost->layers) activations += row.activation_bytes;
  EXPECT_EQ(activations, cost->activation_bytes);
}

TEST(CostModel, FoldingBatchNormKeepsMacsAndDropsItsParameters) {
  auto g = ImportTorchScript(Fixture("resnet18.pt"));
  ASSERT_THAT(g, IsOk());
  ASSERT_THAT(FoldBatchNorms(*g), IsOk());
  ASSERT_THAT(InferShapes(*g, {{1, 3, 224, 224}}), IsOk());
  auto cost = CountCost(*g);
  ASSERT_THAT(cost, IsOk());
  EXPECT_EQ(cost->macs, 1814073344);
  // 20 batch norms with 2 × channels parameters each (9,600) are gone; every conv gained
  // a bias of its output channels (also 4,800 + 4,800 ... = the batch norms' betas).
  EXPECT_EQ(cost->parameters, 11689512 - 4800);
}

}  // namespace
}  // namespace qopt
