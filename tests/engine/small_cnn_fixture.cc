#include "small_cnn_fixture.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "eval/evaluate.h"
#include "ir/cost_model.h"
#include "ir/import.h"
#include "ir/shape_inference.h"
#include "passes/batch_norm_fold.h"
#include "test_util.h"

namespace qopt::testing {

constexpr char kFashionMnist[] = "/usr/share/datasets/fashion-mnist";

std::unique_ptr<CalibratedSmallCnn> LoadCalibratedSmallCnn(const QuantSimOptions& options) {
  auto m = std::make_unique<CalibratedSmallCnn>();
  auto g = ImportTorchScript(SourcePath("zoo/small_cnn.pt"));
  EXPECT_THAT(g, IsOk());
  m->graph = std::move(*g);
  EXPECT_THAT(FoldBatchNorms(m->graph), IsOk());
  EXPECT_THAT(InferShapes(m->graph, {{1, 1, 28, 28}}), IsOk());
  auto cost = CountCost(m->graph);
  EXPECT_THAT(cost, IsOk());
  for (const LayerCost& l : cost->layers) m->macs[l.layer] = l.macs;
  auto sim = QuantSim::Create(m->graph, options);
  EXPECT_THAT(sim, IsOk());
  m->sim = std::move(*sim);
  DatasetSpec spec;
  spec.path = absl::StrCat(kFashionMnist, "/t10k-images-idx3-ubyte.gz");
  spec.labels_path = absl::StrCat(kFashionMnist, "/t10k-labels-idx1-ubyte.gz");
  spec.max_samples = 400;
  spec.preprocess.mean = {0.286};
  spec.preprocess.std = {0.353};
  auto data = LoadDataset(spec);
  EXPECT_THAT(data, IsOk());
  m->batches = MakeBatches(*data, 100);
  at::NoGradGuard no_grad;
  for (const Batch& b : m->batches) EXPECT_THAT(m->sim->ObserveBatch({b.inputs}), IsOk());
  EXPECT_THAT(m->sim->FinishCalibration(), IsOk());
  return m;
}

double Top1(QuantSim& sim, const std::vector<Batch>& batches) {
  auto f = EvaluateSim(sim, batches, batches.size());
  EXPECT_THAT(f, IsOk());
  return f.ok() ? f->at("top1") : -1.0;
}

std::string SmallCnnRecipe(const std::string& quantization, const std::string& steps) {
  const std::string f = kFashionMnist;
  return absl::StrCat(R"({
    "model": {"path": ")", SourcePath("zoo/small_cnn.pt"), R"("},
    "calibration_data": {"path": ")", f, R"(/train-images-idx3-ubyte.gz", "max_samples": 256, "batch_size": 64,
      "preprocess": {"mean": [0.286], "std": [0.353]}},
    "evaluation_data": {"path": ")", f, R"(/t10k-images-idx3-ubyte.gz", "labels_path": ")", f,
                      R"(/t10k-labels-idx1-ubyte.gz", "batch_size": 250, "max_samples": 500,
      "preprocess": {"mean": [0.286], "std": [0.353]}},
    "quantization": )", quantization, R"(,
    "num_threads": 2,
    "steps": )", steps, "}");
}

}  // namespace qopt::testing
