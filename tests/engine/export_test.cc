// Export: AIMET-format encodings (schema, round trip) and the TorchScript model that
// stock PyTorch runs with the same output as the simulation.
#include <cstdlib>
#include <fstream>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/script.h>

#include "data/dataset.h"
#include "data/tensor_file.h"
#include "export/encodings_json.h"
#include "export/torchscript_export.h"
#include "ir/import.h"
#include "passes/batch_norm_fold.h"
#include "test_util.h"

namespace qopt {
namespace {

using ::qopt::testing::Fixture;
using ::qopt::testing::IsOk;
using ::qopt::testing::SourcePath;
using ::qopt::testing::TempDir;
using json = nlohmann::json;

struct Sim {
  Graph graph;
  std::unique_ptr<QuantSim> sim;
  std::vector<at::Tensor> batches;
};

Sim MakeSim(const std::string& fixture, bool per_channel) {
  Sim s;
  auto g = ImportTorchScript(Fixture(fixture));
  EXPECT_THAT(g, IsOk());
  s.graph = std::move(*g);
  EXPECT_THAT(FoldBatchNorms(s.graph), IsOk());
  QuantSimOptions o;
  o.per_channel = per_channel;
  auto sim = QuantSim::Create(s.graph, o);
  EXPECT_THAT(sim, IsOk());
  s.sim = std::move(*sim);
  auto data = LoadNpy(Fixture("calib.npy"));
  EXPECT_THAT(data, IsOk());
  for (const Batch& b : MakeBatches(Dataset{data->slice(0, 0, 32)}, 8)) s.batches.push_back(b.inputs);
  for (size_t i = 0; i + 1 < s.batches.size(); ++i) {
    EXPECT_THAT(s.sim->ObserveBatch({s.batches[i]}), IsOk());
  }
  EXPECT_THAT(s.sim->FinishCalibration(), IsOk());
  return s;
}

void ExpectAimetEncoding(const json& e, const std::string& where) {
  for (const char* key : {"bitwidth", "dtype", "is_symmetric", "min", "max", "scale", "offset"}) {
    EXPECT_TRUE(e.contains(key)) << where << " lacks " << key;
  }
  EXPECT_EQ(e["dtype"], "int") << where;
  EXPECT_TRUE(e["is_symmetric"] == "True" || e["is_symmetric"] == "False") << where;
  EXPECT_TRUE(e["offset"].is_number_integer()) << where;
  EXPECT_LE(e["offset"].get<int64_t>(), 0) << where;
  EXPECT_GT(e["scale"].get<double>(), 0.0) << where;
  EXPECT_NEAR(e["min"].get<double>(), e["offset"].get<double>() * e["scale"].get<double>(), 1e-9)
      << where << ": zero must be on the grid";
}

TEST(EncodingsExportTest, SchemaIsAimets) {
  Sim s = MakeSim("resnet18.pt", /*per_channel=*/true);
  const json j = json::parse(EncodingsToJson(*s.sim));
  EXPECT_EQ(j["version"], "0.6.1");
  for (const char* key : {"activation_encodings", "param_encodings", "excluded_layers",
                          "quantizer_args"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  const json& args = j["quantizer_args"];
  EXPECT_EQ(args["activation_bitwidth"], 8);
  EXPECT_EQ(args["param_bitwidth"], 8);
  EXPECT_EQ(args["per_channel_quantization"], true);
  EXPECT_EQ(args["quant_scheme"], "post_training_tf_enhanced");
  EXPECT_EQ(args["dtype"], "int");

  const json& w = j["param_encodings"]["layer1.0.conv1.weight"];
  ASSERT_TRUE(w.is_array());
  EXPECT_EQ(w.size(), 64u) << "one entry per output channel";
  for (const auto& e : w) ExpectAimetEncoding(e, "layer1.0.conv1.weight");
  EXPECT_FALSE(j["param_encodings"].contains("layer1.0.bn1.weight")) << "folded away";
  ExpectAimetEncoding(j["activation_encodings"]["layer1.0.relu"]["output"]["0"], "relu");
  ExpectAimetEncoding(j["activation_encodings"]["conv1"]["input"]["0"], "model input");
  for (const auto& [layer, sides] : j["activation_encodings"].items()) {
    for (const auto& [side, entries] : sides.items()) {
      EXPECT_TRUE(side == "input" || side == "output") << layer;
      for (const auto& [idx, e] : entries.items()) ExpectAimetEncoding(e, layer);
    }
  }
}

TEST(EncodingsExportTest, LoadingReproducesTheSimulation) {
  at::NoGradGuard no_grad;
  for (bool per_channel : {false, true}) {
    Sim s = MakeSim("googlenet.pt", per_channel);
    const std::string text = EncodingsToJson(*s.sim);
    auto fresh = QuantSim::Create(s.graph, s.sim->options());
    ASSERT_THAT(fresh, IsOk());
    ASSERT_THAT(LoadEncodingsJson(**fresh, text, /*freeze=*/false), IsOk());
    const at::Tensor x = s.batches.back();
    EXPECT_TRUE(at::equal(*s.sim->Forward(x), *(*fresh)->Forward(x)));
    EXPECT_EQ(EncodingsToJson(**fresh), text);
  }
}

TEST(EncodingsExportTest, UnknownNamesAreRejected) {
  Sim s = MakeSim("small_scripted.pt", false);
  json j = json::parse(EncodingsToJson(*s.sim));
  j["param_encodings"]["nope.weight"] = j["param_encodings"].begin().value();
  EXPECT_THAT(LoadEncodingsJson(*s.sim, j.dump(), false),
              ::qopt::testing::StatusIs(absl::StatusCode::kNotFound,
                                        ::testing::HasSubstr("nope.weight")));
}

void SaveTensor(const at::Tensor& t, const std::string& path) {
  const std::vector<char> bytes = torch::jit::pickle_save(c10::IValue(t));
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

class TorchScriptExportTest : public ::testing::TestWithParam<std::tuple<std::string, bool>> {};

TEST_P(TorchScriptExportTest, StockPyTorchRunsTheSimulation) {
  at::NoGradGuard no_grad;
  const auto& [fixture, per_channel] = GetParam();
  Sim s = MakeSim(fixture, per_channel);
  TempDir dir;
  ASSERT_THAT(ExportTorchScript(s.graph, s.sim.get(), dir.File("model.pt")), IsOk());
  std::ofstream(dir.File("model.encodings")) << EncodingsToJson(*s.sim);
  const at::Tensor x = s.batches.back();
  const at::Tensor expected = *s.sim->Forward(x);

  // LibTorch's own loader and interpreter compute exactly what the simulation does.
  torch::jit::Module m = torch::jit::load(dir.File("model.pt"));
  const at::Tensor got = m.forward({x}).toTensor();
  EXPECT_TRUE(at::equal(got, expected)) << "max diff " << (got - expected).abs().max().item<double>();

  // Debian's python3-torch, as a user would load it.
  SaveTensor(x, dir.File("input.pt"));
  SaveTensor(expected, dir.File("expected.pt"));
  const std::string cmd = ::qopt::testing::Python() + " " + SourcePath("tests/python/check_export.py") + " " + dir.path();
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, TorchScriptExportTest,
    ::testing::Combine(::testing::Values("resnet18.pt", "mobilenet_v2.pt", "googlenet.pt", "small_scripted.pt",
                                         "branch.pt", "shufflenet_v2.pt", "dense_tiny.pt", "unet_tiny.pt",
                                         "transformer_tiny.pt", "super_resolution_tiny.pt",
                                         "stacked_scripted.pt", "control_flow.pt", "loop_scripted.pt",
                                         "dw_separable_relu6.pt"),
                       ::testing::Bool()),
    [](const auto& info) {
      std::string n = std::get<0>(info.param);
      return n.substr(0, n.find('.')) + (std::get<1>(info.param) ? "_per_channel" : "_per_tensor");
    });

TEST(TorchScriptExportTest, FloatExportMatchesTheFoldedModel) {
  at::NoGradGuard no_grad;
  auto g = ImportTorchScript(Fixture("mobilenet_v2.pt"));
  ASSERT_THAT(g, IsOk());
  ASSERT_THAT(FoldBatchNorms(*g), IsOk());
  TempDir dir;
  ASSERT_THAT(ExportTorchScript(*g, nullptr, dir.File("fp32.pt")), IsOk());
  const at::Tensor x = at::randn({2, 3, 64, 64});
  const at::Tensor expected = *Interpreter(*g).Forward(x);
  torch::jit::Module m = torch::jit::load(dir.File("fp32.pt"));
  EXPECT_TRUE(at::equal(m.forward({x}).toTensor(), expected));
  // Parameters sit where the user's modules had them.
  bool found = false;
  for (const auto& p : m.named_parameters()) found = found || p.name == "features.1.conv.0.0.weight";
  EXPECT_TRUE(found);
}

// The importer makes every op functional; the export writes activations back in place
// where that is safe (their input is a fresh tensor nothing else reads) and keeps the
// functional form elsewhere, so the model computes the same.
TEST(TorchScriptExportTest, ActivationsRunInPlaceOnlyWhereNothingElseReadsTheirInput) {
  at::NoGradGuard no_grad;
  TempDir dir;
  torch::jit::Module user("InPlace");
  user.define(R"(
def forward(self, x):
    y = x * 2.0
    r = torch.relu(y)
    z = torch.relu(r + y)
    return torch.relu(x) + torch.clamp(z * z, -1.0, 1.0)
)");
  user.save(dir.File("user.pt"));
  auto g = ImportTorchScript(dir.File("user.pt"));
  ASSERT_THAT(g, IsOk());
  ASSERT_THAT(ExportTorchScript(*g, nullptr, dir.File("out.pt")), IsOk());
  torch::jit::Module m = torch::jit::load(dir.File("out.pt"));
  std::map<std::string, int> kinds;
  for (const torch::jit::Node* n : m.get_method("forward").graph()->nodes()) ++kinds[n->kind().toQualString()];
  EXPECT_EQ(kinds["aten::relu_"], 1);   // relu(r + y)
  EXPECT_EQ(kinds["aten::relu"], 2);    // relu(y): y is read again; relu(x): x is the caller's
  EXPECT_EQ(kinds["aten::clamp_"], 1);  // clamp(z * z)
  const at::Tensor x = at::randn({4, 8});
  const at::Tensor expected = user.forward({x}).toTensor();
  const at::Tensor input = x.clone();
  EXPECT_TRUE(at::allclose(m.forward({input}).toTensor(), expected));
  EXPECT_TRUE(at::equal(input, x)) << "the caller's input was overwritten";
}

}  // namespace
}  // namespace qopt
