// Quantization-aware training: the gradients of each quantizer mode against references
// computed by hand or by autograd through elementary ops; the trainer on the zoo's small
// CNN (export reproduces the trained simulation bit for bit, a resumed run ends where an
// uninterrupted one does, a non-finite loss stops naming epoch and step); checkpoints
// that are not well formed are refused; and the qat step on real Fashion-MNIST improves
// W3A3 accuracy over nearest rounding, and stops within a second when cancelled.
#include "train/qat.h"

#include <atomic>
#include <chrono>
#include <fstream>
#include <limits>

#include <ATen/ATen.h>
#include <torch/script.h>

#include "export/torchscript_export.h"
#include "ir/import.h"
#include "passes/batch_norm_fold.h"
#include "quant/fake_quantize.h"
#include "recipe_json.h"
#include "recipe/runner.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/trainable_quantizer.h"
#include "train/trainer.h"
#include "status.h"

namespace qopt {
namespace {

using ::qopt::testing::IsOk;
using ::qopt::testing::SourcePath;
using ::qopt::testing::StatusIs;
using ::qopt::testing::TempDir;
using ::testing::HasSubstr;

Quantizer MakeQuantizer(QuantSpec spec, int axis, const std::vector<std::pair<double, double>>& ranges) {
  Quantizer q(spec, CalibrationMethod::kMinMax, 100.0, axis);
  std::vector<Encoding> e;
  for (const auto& [lo, hi] : ranges) e.push_back(ComputeEncoding(lo, hi, spec));
  EXPECT_THAT(q.SetEncodings(e, /*freeze=*/false), IsOk());
  return q;
}

// x spread over and beyond [-1, 2], on and between grid points.
at::Tensor Inputs() { return at::linspace(-1.7, 2.9, 97, at::kFloat).reshape({1, 97}); }

// round() whose gradient is the identity: the straight-through estimator.
at::Tensor RoundSte(const at::Tensor& u) { return u + (at::round(u) - u).detach(); }

// AIMET's learned grid written with elementary ops: scale = (max - min) / steps, offset =
// round(min / scale), both rounds straight through, clamp passing gradient inside only.
at::Tensor ReferenceLearnedGrid(const at::Tensor& x, const at::Tensor& lo, const at::Tensor& hi, int64_t steps) {
  at::Tensor scale = (hi - lo) / static_cast<double>(steps);
  at::Tensor zero_point = at::clamp(-RoundSte(lo / scale), 0.0, static_cast<double>(steps));
  at::Tensor q = at::clamp(RoundSte(x * (1.0 / scale)) + zero_point, 0.0, static_cast<double>(steps));
  return (q - zero_point) * scale;
}

TEST(TrainableQuantizerTest, OffModeActivationIsStraightThroughInsideTheGrid) {
  QuantSpec spec;
  spec.bitwidth = 4;
  const Quantizer q = MakeQuantizer(spec, -1, {{-1.0, 2.0}});
  auto tq = TrainableQuantizer::Create(q, RangeLearning::kOff, at::Tensor(), c10::kCPU);
  ASSERT_THAT(tq, IsOk());
  EXPECT_TRUE(tq->ranges().empty());
  at::Tensor x = Inputs().requires_grad_(true);
  at::Tensor g = at::linspace(0.5, 1.5, 97).reshape({1, 97});
  at::Tensor y = tq->Apply(x);
  y.backward(g);
  const Encoding& e = q.encodings()[0];
  EXPECT_TRUE(at::equal(y.detach(), q.Apply(x.detach()))) << "forward is the simulation's";
  // By hand: gradient g where round(x / s) + zero point lands on the grid, 0 elsewhere.
  const float inv = 1.0f / static_cast<float>(e.scale);
  at::Tensor level = at::round(x.detach() * inv) + static_cast<double>(e.zero_point());
  at::Tensor inside = (level >= 0) & (level <= static_cast<double>(e.num_steps));
  EXPECT_TRUE(at::equal(x.grad(), g * inside));
  EXPECT_GT(inside.sum().item<int64_t>(), 50);
  EXPECT_LT(inside.sum().item<int64_t>(), 97);
}

TEST(TrainableQuantizerTest, OffModeWeightEncodingsFollowTheWeight) {
  QuantSpec spec;
  spec.bitwidth = 4;
  spec.symmetric = true;
  at::manual_seed(1);
  at::Tensor w = at::randn({3, 8});
  const Quantizer q = MakeQuantizer(spec, 0, {{-1, 1}, {-1, 1}, {-1, 1}});
  auto tq = TrainableQuantizer::Create(q, RangeLearning::kOff, w, c10::kCPU);
  ASSERT_THAT(tq, IsOk());
  // A new weight: its own per-channel encodings, not the stale ones.
  at::Tensor w2 = (w * 3).requires_grad_(true);
  at::Tensor y = tq->Apply(w2);
  y.sum().backward();
  auto fresh = ComputeTensorEncodings(w2.detach(), 0, CalibrationMethod::kMinMax, 100.0, spec);
  ASSERT_THAT(fresh, IsOk());
  Quantizer expected(spec, CalibrationMethod::kMinMax, 100.0, 0);
  ASSERT_THAT(expected.SetEncodings(*fresh, false), IsOk());
  EXPECT_TRUE(at::equal(y.detach(), expected.Apply(w2.detach())));
  EXPECT_TRUE(at::equal(w2.grad(), at::ones_like(w2))) << "min-max grid: every weight is inside";
  auto enc = tq->Encodings(w2);
  ASSERT_THAT(enc, IsOk());
  EXPECT_EQ(*enc, *fresh);
}

TEST(TrainableQuantizerTest, AimetRangeGradientsMatchAutogradThroughElementaryOps) {
  QuantSpec spec;
  spec.bitwidth = 4;
  const Quantizer q = MakeQuantizer(spec, -1, {{-1.0, 2.0}});
  auto tq = TrainableQuantizer::Create(q, RangeLearning::kAimet, at::Tensor(), c10::kCPU);
  ASSERT_THAT(tq, IsOk());
  ASSERT_EQ(tq->ranges().size(), 2u) << "min and max learn";
  at::Tensor g = at::linspace(-1.0, 1.5, 97).reshape({1, 97});
  at::Tensor x = Inputs().requires_grad_(true);
  at::Tensor y = tq->Apply(x);
  y.backward(g);

  const Encoding& e = q.encodings()[0];
  at::Tensor lo = at::tensor({e.min}, at::kDouble).requires_grad_(true);
  at::Tensor hi = at::tensor({e.max}, at::kDouble).requires_grad_(true);
  at::Tensor xr = Inputs().to(at::kDouble).requires_grad_(true);
  at::Tensor yr = ReferenceLearnedGrid(xr, lo, hi, e.num_steps);
  yr.backward(g.to(at::kDouble));
  EXPECT_TRUE(at::allclose(y.detach().to(at::kDouble), yr.detach(), 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(x.grad().to(at::kDouble), xr.grad()));
  const at::Tensor min_grad = tq->ranges()[0].grad(), max_grad = tq->ranges()[1].grad();
  EXPECT_NEAR(min_grad.item<double>(), lo.grad().item<double>(), 1e-3 * std::abs(lo.grad().item<double>()) + 1e-4);
  EXPECT_NEAR(max_grad.item<double>(), hi.grad().item<double>(), 1e-3 * std::abs(hi.grad().item<double>()) + 1e-4);
  EXPECT_NE(max_grad.item<double>(), 0.0);
}

TEST(TrainableQuantizerTest, AimetSymmetricPerChannelLearnsTheMaxOnly) {
  QuantSpec spec;
  spec.bitwidth = 3;
  spec.symmetric = true;
  at::manual_seed(2);
  at::Tensor w = at::randn({2, 16});
  const Quantizer q = MakeQuantizer(spec, 0, {{-1.5, 1.0}, {-0.5, 0.7}});
  auto tq = TrainableQuantizer::Create(q, RangeLearning::kAimet, w, c10::kCPU);
  ASSERT_THAT(tq, IsOk());
  ASSERT_EQ(tq->ranges().size(), 1u);
  at::Tensor wl = w.clone().requires_grad_(true);
  tq->Apply(wl).sum().backward();
  // Reference: scale = max / Qp with the offset fixed; per channel.
  const Encoding& e0 = q.encodings()[0];
  const double qp = static_cast<double>(e0.num_steps + e0.offset);
  at::Tensor hi = at::tensor({q.encodings()[0].max, q.encodings()[1].max}, at::kDouble).requires_grad_(true);
  at::Tensor scale = (hi / qp).view({2, 1});
  const double z = static_cast<double>(e0.zero_point());
  at::Tensor level = at::clamp(RoundSte(w.to(at::kDouble) * (1.0 / scale)) + z, 0.0, static_cast<double>(e0.num_steps));
  ((level - z) * scale).sum().backward();
  EXPECT_TRUE(at::allclose(tq->ranges()[0].grad().to(at::kDouble), hi.grad(), 1e-4, 1e-4))
      << tq->ranges()[0].grad() << " vs " << hi.grad();
}

TEST(TrainableQuantizerTest, LsqStepSizeGradientIsThePapers) {
  QuantSpec spec;
  spec.bitwidth = 4;
  const Quantizer q = MakeQuantizer(spec, -1, {{-1.0, 2.0}});
  auto tq = TrainableQuantizer::Create(q, RangeLearning::kLsq, at::Tensor(), c10::kCPU);
  ASSERT_THAT(tq, IsOk());
  ASSERT_EQ(tq->ranges().size(), 1u);
  const Encoding& e = q.encodings()[0];
  EXPECT_FLOAT_EQ(tq->ranges()[0].item<float>(), static_cast<float>(e.scale)) << "activations start calibrated";
  at::Tensor x = Inputs().repeat({4, 1});  // a batch of 4: N = 97 values per sample
  at::Tensor g = at::linspace(-1.0, 1.0, 4 * 97).reshape({4, 97});
  tq->Apply(x).backward(g);
  // By hand (Esser et al. 2020): d x_hat / d s = round(x/s) - x/s inside the grid, the
  // clipped level outside; times g = 1 / sqrt(N * Qp).
  const double s = static_cast<float>(e.scale), zp = static_cast<double>(e.zero_point());
  const double qmax = static_cast<double>(e.num_steps);
  at::Tensor v = x.to(at::kDouble) * static_cast<double>(1.0f / static_cast<float>(s));
  at::Tensor level = at::round(v) + zp;
  at::Tensor d = at::where(level < 0, at::full_like(v, -zp), at::where(level > qmax, at::full_like(v, qmax - zp), at::round(v) - v));
  const double grad_scale = 1.0 / std::sqrt(97.0 * (qmax - zp));
  const double expected = (d * g.to(at::kDouble)).sum().item<double>() * grad_scale;
  EXPECT_NEAR(tq->ranges()[0].grad().item<double>(), expected, 1e-4 * std::abs(expected) + 1e-6);

  // Weights start at 2 * mean|w| / sqrt(Qp), per channel.
  QuantSpec wspec = spec;
  wspec.symmetric = true;
  at::manual_seed(3);
  at::Tensor w = at::randn({3, 10});
  const Quantizer wq = MakeQuantizer(wspec, 0, {{-1, 1}, {-1, 1}, {-1, 1}});
  auto tw = TrainableQuantizer::Create(wq, RangeLearning::kLsq, w, c10::kCPU);
  ASSERT_THAT(tw, IsOk());
  const double wqp = static_cast<double>(wq.encodings()[0].num_steps + wq.encodings()[0].offset);
  EXPECT_TRUE(at::allclose(tw->ranges()[0], w.abs().mean(1) * (2.0 / std::sqrt(wqp))));
}

// The one-pass kernels training uses against torch's own fake-quantize ops, over
// several chunks of threads' work and values on, between and beyond the grid.
TEST(TrainableQuantizerTest, FusedKernelsMatchTorchsOps) {
  at::manual_seed(5);
  const at::Tensor x0 = at::randn({3, 40000}) * 2;
  const at::Tensor g = at::randn({3, 40000});
  QuantSpec spec;
  spec.bitwidth = 4;
  const Encoding e = ComputeEncoding(-1.5, 2.5, spec);

  at::Tensor x = x0.clone().requires_grad_(true), xt = x0.clone().requires_grad_(true);
  at::Tensor y = FakeQuantizePerTensorSte(x, e);
  at::Tensor yt = at::fake_quantize_per_tensor_affine(xt, e.scale, e.zero_point(), 0, e.num_steps);
  y.backward(g);
  yt.backward(g);
  EXPECT_TRUE(at::equal(y, yt));
  EXPECT_TRUE(at::equal(x.grad(), xt.grad()));

  for (double factor : {1.0, 0.05}) {
    at::Tensor s = at::tensor({static_cast<float>(e.scale)}).requires_grad_(true);
    at::Tensor z = at::tensor({static_cast<float>(e.zero_point())}).requires_grad_(true);
    at::Tensor st = s.detach().clone().requires_grad_(true), zt = z.detach().clone().requires_grad_(true);
    x = x0.clone().requires_grad_(true);
    xt = x0.clone().requires_grad_(true);
    y = FakeQuantizeLearnedPerTensor(x, s, z, e.num_steps, factor);
    yt = at::_fake_quantize_learnable_per_tensor_affine(xt, st, zt, 0, e.num_steps, factor);
    y.backward(g);
    yt.backward(g);
    EXPECT_TRUE(at::equal(y, yt));
    EXPECT_TRUE(at::equal(x.grad(), xt.grad()));
    EXPECT_NEAR(s.grad().item<double>(), st.grad().item<double>(), 1e-4 * std::abs(st.grad().item<double>()));
    EXPECT_NEAR(z.grad().item<double>(), zt.grad().item<double>(), 1e-4 * std::abs(zt.grad().item<double>()));
  }

  // Per channel: three channels, each with its own grid, on axis 0 and (moved to the front
  // and back) on axis 1; against torch's op.
  const at::Tensor scales = at::tensor({0.05f, 0.2f, 0.6f}), zeros = at::tensor({0.0f, 7.0f, 15.0f});
  for (int64_t axis : {0, 1}) {
    const at::Tensor xc0 = axis == 0 ? x0 : x0.t().contiguous(), gc = axis == 0 ? g : g.t().contiguous();
    at::Tensor s = scales.clone().requires_grad_(true), z = zeros.clone().requires_grad_(true);
    at::Tensor st = scales.clone().requires_grad_(true), zt = zeros.clone().requires_grad_(true);
    x = xc0.clone().requires_grad_(true);
    xt = xc0.clone().requires_grad_(true);
    y = FakeQuantizeLearnedPerChannel(x, s, z, axis, 15, 0.05);
    yt = at::_fake_quantize_learnable_per_channel_affine(xt, st, zt, axis, 0, 15, 0.05);
    y.backward(gc);
    yt.backward(gc);
    EXPECT_TRUE(at::equal(y, yt)) << "axis " << axis;
    EXPECT_TRUE(at::equal(x.grad(), xt.grad())) << "axis " << axis;
    EXPECT_TRUE(at::allclose(s.grad(), st.grad(), 1e-4, 1e-5)) << s.grad() << " vs " << st.grad();
    EXPECT_TRUE(at::allclose(z.grad(), zt.grad(), 1e-4, 1e-5)) << z.grad() << " vs " << zt.grad();
    EXPECT_GT(z.grad().abs().min().item<float>(), 0.0f) << "every channel has values off its grid";
  }
}

TEST(CheckpointTest, RoundTripsAndRefusesMalformedFiles) {
  TempDir dir;
  Checkpoint c;
  c.meta["fingerprint"] = "abc";
  c.tensors["a"] = at::arange(6, at::kFloat).reshape({2, 3});
  c.tensors["b"] = at::tensor({int64_t{7}});
  const std::string path = dir.File("ckpt");
  ASSERT_THAT(WriteCheckpoint(path, c), IsOk());
  auto back = ReadCheckpoint(path);
  ASSERT_THAT(back, IsOk());
  EXPECT_EQ(back->meta["fingerprint"], "abc");
  EXPECT_TRUE(at::equal(back->tensors.at("a"), c.tensors["a"]));
  EXPECT_TRUE(at::equal(back->tensors.at("b"), c.tensors["b"]));
  EXPECT_THAT(ReadCheckpoint(dir.File("none")), StatusIs(absl::StatusCode::kNotFound, HasSubstr("no checkpoint")));

  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto write = [&](const std::string& name, const std::string& content) {
    std::ofstream(dir.File(name), std::ios::binary) << content;
    return ReadCheckpoint(dir.File(name));
  };
  EXPECT_THAT(write("truncated", bytes.substr(0, bytes.size() - 5)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("runs past the end")));
  EXPECT_THAT(write("magic", "PK" + bytes.substr(2)), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a qopt checkpoint")));
  std::string huge = bytes;
  const size_t at_shape = huge.find("[2,3]");
  ASSERT_NE(at_shape, std::string::npos);
  huge.replace(at_shape, 5, "[9,3]");
  EXPECT_THAT(write("shape", huge), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not match its size")));
  std::string negative = bytes;
  negative.replace(negative.find("[2,3]"), 5, "[-2,3]");
  EXPECT_THAT(write("negative", negative), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("checkpoint is corrupt")));
  EXPECT_THAT(ReadCheckpoint(path, 16), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("more than the limit")));

  // The meta alone, from the header.
  auto meta = ReadCheckpointMeta(path);
  ASSERT_THAT(meta, IsOk());
  EXPECT_EQ((*meta)["fingerprint"], "abc");
  EXPECT_THAT(ReadCheckpointMeta(dir.File("none")), StatusIs(absl::StatusCode::kNotFound, HasSubstr("no checkpoint")));
  std::ofstream(dir.File("short"), std::ios::binary) << bytes.substr(0, 20);
  EXPECT_THAT(ReadCheckpointMeta(dir.File("short")), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("runs past the end")));
  std::ofstream(dir.File("magic2"), std::ios::binary) << "PK" + bytes.substr(2);
  EXPECT_THAT(ReadCheckpointMeta(dir.File("magic2")), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a qopt checkpoint")));
  EXPECT_THAT(ReadCheckpointMeta(path, 4), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("more than the limit")));
}

// The zoo's small CNN, folded, W4A4 per-channel, calibrated on real images.
struct Model {
  Graph graph;
  std::unique_ptr<QuantSim> sim;
  Dataset data;
};

constexpr char kFashionMnist[] = "/usr/share/datasets/fashion-mnist";

Dataset FashionMnist(bool train, int64_t n) {
  DatasetSpec spec;
  spec.path = absl::StrCat(kFashionMnist, train ? "/train" : "/t10k", "-images-idx3-ubyte.gz");
  spec.labels_path = absl::StrCat(kFashionMnist, train ? "/train" : "/t10k", "-labels-idx1-ubyte.gz");
  spec.max_samples = n;
  spec.preprocess.mean = {0.286};
  spec.preprocess.std = {0.353};
  auto d = LoadDataset(spec);
  EXPECT_THAT(d, IsOk());
  return std::move(*d);
}

std::unique_ptr<Model> Load(int bits = 4) {
  auto m = std::make_unique<Model>();
  auto g = ImportTorchScript(SourcePath("zoo/small_cnn.pt"));
  EXPECT_THAT(g, IsOk());
  m->graph = std::move(*g);
  EXPECT_THAT(FoldBatchNorms(m->graph), IsOk());
  QuantSimOptions o;
  o.param_bitwidth = bits;
  o.activation_bitwidth = bits;
  o.per_channel = true;
  auto sim = QuantSim::Create(m->graph, o);
  EXPECT_THAT(sim, IsOk());
  m->sim = std::move(*sim);
  m->data = FashionMnist(/*train=*/true, 512);
  at::NoGradGuard no_grad;
  for (int64_t b = 0; b < 256; b += 64) EXPECT_THAT(m->sim->ObserveBatch({m->data.inputs.slice(0, b, b + 64)}), IsOk());
  EXPECT_THAT(m->sim->FinishCalibration(), IsOk());
  return m;
}

TrainOptions Short(int epochs = 1) {
  TrainOptions o;
  o.epochs = epochs;
  o.batch_size = 32;
  o.max_steps_per_epoch = 6;
  o.seed = 7;
  return o;
}

class QatModeTest : public ::testing::TestWithParam<RangeLearning> {};

TEST_P(QatModeTest, ExportReproducesTheTrainedSimulationBitForBit) {
  auto m = Load();
  QatOptions qo;
  qo.range_learning = GetParam();
  qo.learning_rate = 0.01;
  auto task = QatTask::Create(m->graph, *m->sim, qo);
  ASSERT_THAT(task, IsOk());
  const at::Tensor x = m->data.inputs.slice(0, 0, 32);
  at::Tensor before;
  {
    at::NoGradGuard no_grad;
    before = *m->sim->Forward(x);
  }
  ASSERT_THAT(Train(**task, m->data, Short(), {}), IsOk());
  at::NoGradGuard no_grad;
  const at::Tensor trained = *(*task)->Forward(x);
  const at::Tensor sim = *m->sim->Forward(x);
  EXPECT_FALSE(at::equal(sim, before)) << "training changed the model";
  EXPECT_TRUE(at::equal(sim, trained)) << "the simulation computes what training's forward pass computed";
  TempDir dir;
  ASSERT_THAT(ExportTorchScript(m->graph, m->sim.get(), dir.File("model.pt")), IsOk());
  torch::jit::Module exported = torch::jit::load(dir.File("model.pt"));
  EXPECT_TRUE(at::equal(exported.forward({x}).toTensor(), sim)) << "stock LibTorch runs the trained simulation";
  // The floating-point reference is the model as it came.
  auto fresh = ImportTorchScript(SourcePath("zoo/small_cnn.pt"));
  ASSERT_THAT(fresh, IsOk());
  ASSERT_THAT(FoldBatchNorms(*fresh), IsOk());
  Interpreter original(*fresh);
  EXPECT_TRUE(at::allclose(*m->sim->ForwardFloat(x), *original.Forward(x), 1e-5, 1e-5));
}

INSTANTIATE_TEST_SUITE_P(Modes, QatModeTest,
                         ::testing::Values(RangeLearning::kOff, RangeLearning::kAimet, RangeLearning::kLsq),
                         [](const auto& info) { return std::string(RangeLearningName(info.param)); });

TEST(QatTest, ResumedRunEndsWhereAnUninterruptedOneDoes) {
  TempDir dir;
  QatOptions qo;
  qo.range_learning = RangeLearning::kAimet;
  TrainOptions o = Short(2);
  o.optimizer = TrainOptions::Optimizer::kAdam;
  o.random_crop_padding = 2;
  o.horizontal_flip = true;
  o.fingerprint = "same recipe";

  auto straight = Load();
  auto straight_task = QatTask::Create(straight->graph, *straight->sim, qo);
  ASSERT_THAT(straight_task, IsOk());
  auto straight_result = Train(**straight_task, straight->data, o, {});
  ASSERT_THAT(straight_result, IsOk());

  // A run that dies during its second epoch, after the first epoch's checkpoint...
  o.checkpoint_path = dir.File("ckpt");
  auto first = Load();
  auto first_task = QatTask::Create(first->graph, *first->sim, qo);
  ASSERT_THAT(first_task, IsOk());
  int checkpoints = 0;
  TrainCallbacks dies;
  dies.on_checkpoint = [&] { ++checkpoints; };
  dies.on_iteration = [](const TrainProgress& p) {
    return p.epoch == 2 && p.step == 3 ? absl::AbortedError("worker died") : absl::OkStatus();
  };
  EXPECT_THAT(Train(**first_task, first->data, o, dies), StatusIs(absl::StatusCode::kAborted, HasSubstr("died")));
  EXPECT_EQ(checkpoints, 1);

  // ... and a fresh one that finds the checkpoint.
  auto second = Load();
  auto second_task = QatTask::Create(second->graph, *second->sim, qo);
  ASSERT_THAT(second_task, IsOk());
  int resumed_from = -1;
  TrainCallbacks resumes;
  resumes.on_resume = [&](const std::vector<EpochRow>& done) {
    resumed_from = static_cast<int>(done.size());
    return absl::OkStatus();
  };
  auto resumed = Train(**second_task, second->data, o, resumes);
  ASSERT_THAT(resumed, IsOk());
  EXPECT_EQ(resumed_from, 1);
  EXPECT_EQ(resumed->resumed_epochs, 1);
  ASSERT_EQ(resumed->epochs.size(), 2u);
  EXPECT_DOUBLE_EQ(resumed->epochs[1].loss, straight_result->epochs[1].loss);
  at::NoGradGuard no_grad;
  const at::Tensor x = straight->data.inputs.slice(0, 0, 64);
  EXPECT_TRUE(at::equal(*straight->sim->Forward(x), *second->sim->Forward(x)));

  // A checkpoint of another recipe is not resumed from.
  o.fingerprint = "another recipe";
  auto other = Load();
  auto other_task = QatTask::Create(other->graph, *other->sim, qo);
  ASSERT_THAT(other_task, IsOk());
  auto fresh = Train(**other_task, other->data, o, {});
  ASSERT_THAT(fresh, IsOk());
  EXPECT_EQ(fresh->resumed_epochs, 0);
}

// y = w * x: what the trainer needs of a task, and nothing else.
class ScaleTask : public TrainingTask {
 public:
  ScaleTask() { groups_.push_back({"weights", {{"w", at::ones({1}).requires_grad_(true)}}, 0.1, 0.0}); }
  const std::vector<ParamGroup>& groups() const override { return groups_; }
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& x) override { return x.flatten(1) * groups_[0].tensors[0].second; }
  absl::StatusOr<at::Tensor> Teacher(const at::Tensor& x) override { return x.flatten(1); }
  absl::StatusOr<std::map<std::string, double>> EndEpoch(int) override { return std::map<std::string, double>{}; }

 private:
  std::vector<ParamGroup> groups_;
};

TEST(TrainerTest, NonFiniteLossStopsNamingEpochAndStep) {
  Dataset d;
  d.inputs = at::randn({64, 4});
  d.labels = at::zeros({64}, at::kLong);
  TrainOptions o = Short(2);
  o.batch_size = 8;
  o.max_steps_per_epoch = 0;
  d.inputs[40][2] = std::numeric_limits<float>::quiet_NaN();
  ScaleTask task;
  // Sample 40 comes in some batch of the first epoch; the error names which.
  const absl::Status s = Train(task, d, o, {}).status();
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("loss is NaN at epoch 1, step ")));
  EXPECT_THAT(std::string(s.message()), HasSubstr("lower learning_rate"));
}

TEST(QatTest, DivergingWeightsStopNamingEpochAndStep) {
  auto m = Load();
  auto task = QatTask::Create(m->graph, *m->sim, {});
  ASSERT_THAT(task, IsOk());
  // A learning rate no model survives: the weights overflow after the first step,
  // while the simulated output, on its grid, keeps the loss finite.
  auto diverging = QatTask::Create(m->graph, *m->sim, QatOptions{RangeLearning::kOff, 1e38, 1e38, 0.0, nullptr});
  ASSERT_THAT(diverging, IsOk());
  const absl::Status diverged = Train(**diverging, m->data, Short(), {}).status();
  EXPECT_THAT(diverged, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not finite after epoch 1, step 1")));
  EXPECT_THAT(std::string(diverged.message()), HasSubstr("lower learning_rate"));
  Dataset unlabeled = m->data;
  unlabeled.labels.reset();
  EXPECT_THAT(Train(**task, unlabeled, Short(), {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("training data has no labels")));
  TrainOptions distill = Short();
  distill.loss = LossKind::kDistill;
  EXPECT_THAT(Train(**task, unlabeled, distill, {}), IsOk()) << "distillation needs no labels";
}

// The qat step on real data, as a recipe runs it: 3-bit weights and activations lose
// most of the small CNN's accuracy with nearest rounding; one short epoch of QAT wins it
// back. Measured, not assumed: the test compares the two evaluations of one run.
std::string QatRecipe(const std::string& qat) {
  const std::string f = kFashionMnist;
  return absl::StrCat(R"({
    "model": {"path": ")", SourcePath("zoo/small_cnn.pt"), R"("},
    "calibration_data": {"path": ")", f, R"(/train-images-idx3-ubyte.gz", "max_samples": 512, "shuffle": true, "seed": 1,
      "batch_size": 64, "preprocess": {"mean": [0.286], "std": [0.353]}},
    "evaluation_data": {"path": ")", f, R"(/t10k-images-idx3-ubyte.gz", "labels_path": ")", f,
                      R"(/t10k-labels-idx1-ubyte.gz", "batch_size": 500, "max_samples": 2000,
      "preprocess": {"mean": [0.286], "std": [0.353]}},
    "quantization": {"param_bitwidth": 3, "activation_bitwidth": 3, "per_channel": true},
    "num_threads": 2,
    "steps": [{"fold_batch_norm": {}}, {"calibrate": {}}, {"evaluate": {}}, {"qat": )", qat, R"(}, {"evaluate": {}}]
  })");
}

absl::StatusOr<RunSummary> RunJson(const std::string& json, RunOptions options) {
  ASSIGN_OR_RETURN(const v1::Recipe recipe, ParseRecipeJson(json));
  return RunRecipe(recipe, options);
}

TEST(QatStepTest, OneEpochWinsBackW3A3AccuracyOnFashionMnist) {
  TempDir dir;
  RunOptions options;
  options.out_dir = dir.File("out");
  std::vector<std::string> lines;
  options.on_progress = [&](const Progress& p) {
    if (p.log) lines.push_back(p.message);
  };
  const std::string f = kFashionMnist;
  auto run = RunJson(QatRecipe(absl::StrCat(R"({"epochs": 1, "max_steps_per_epoch": 150, "learning_rate": 0.01,
      "data": {"path": ")", f, R"(/train-images-idx3-ubyte.gz", "labels_path": ")", f,
      R"(/train-labels-idx1-ubyte.gz", "max_samples": 20000, "preprocess": {"mean": [0.286], "std": [0.353]}}})")),
                     options);
  ASSERT_THAT(run, IsOk());
  const v1::Report& report = run->report;
  ASSERT_EQ(report.steps_size(), 5);
  const double nearest = report.steps(2).figures().at("top1");
  const double qat = report.steps(4).figures().at("top1");
  const double fp32 = report.steps(4).figures().at("fp32_top1");
  EXPECT_GT(qat, nearest + 0.05) << "nearest " << nearest << ", qat " << qat;
  EXPECT_GT(qat, fp32 - 0.03) << "qat " << qat << ", fp32 " << fp32;
  const v1::StepReport& step = report.steps(3);
  EXPECT_EQ(step.step(), "qat");
  EXPECT_EQ(step.figures().at("top1"), qat) << "the epoch's evaluation is the simulation's";
  EXPECT_EQ(step.layers_size(), 1);
  EXPECT_GT(step.figures().at("trained_weight_values"), 100000);
  bool said_what_trains = false, said_epoch = false;
  for (const std::string& l : lines) {
    said_what_trains |= l.find("qat: trains 4 weight tensors") != std::string::npos;
    said_epoch |= l.find("qat: epoch 1/1: loss") != std::string::npos;
  }
  EXPECT_TRUE(said_what_trains && said_epoch);
}

// The simulation of ONNX Runtime's int8 kernels rounds inside layers: qat refuses it by
// name, and an unknown kernels setting is refused before anything runs.
TEST(QatStepTest, RefusesTheInt8KernelSimulation) {
  TempDir dir;
  RunOptions options;
  options.out_dir = dir.File("out");
  std::string json = QatRecipe(R"({"epochs": 1, "max_steps_per_epoch": 1})");
  const std::string fake_quant = R"("per_channel": true})";
  const size_t at = json.find(fake_quant);
  ASSERT_NE(at, std::string::npos);
  std::string int8 = json;
  int8.replace(at, fake_quant.size(), R"("per_channel": true, "kernels": "onnxruntime_int8"})");
  EXPECT_THAT(RunJson(int8, options), StatusIs(absl::StatusCode::kFailedPrecondition,
                                               HasSubstr("qat: quantization.kernels onnxruntime_int8 rounds")));
  std::string unknown = json;
  unknown.replace(at, fake_quant.size(), R"("per_channel": true, "kernels": "int4"})");
  options.out_dir = dir.File("out2");
  EXPECT_THAT(RunJson(unknown, options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("quantization.kernels: unknown kernels 'int4'")));
}

TEST(QatStepTest, CancelStopsTrainingWithinASecond) {
  TempDir dir;
  RunOptions options;
  options.out_dir = dir.File("out");
  std::atomic<bool> cancel{false};
  std::chrono::steady_clock::time_point asked;
  options.on_progress = [&](const Progress& p) {
    if (p.stage == "qat" && !p.log && p.fraction > 0 && !cancel) {
      asked = std::chrono::steady_clock::now();
      cancel = true;
    }
  };
  options.cancelled = [&] { return cancel.load(); };
  auto run = RunJson(QatRecipe(R"({"epochs": 5, "loss": "distill"})"), options);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - asked).count();
  EXPECT_THAT(run, StatusIs(absl::StatusCode::kCancelled, HasSubstr("cancelled")));
  EXPECT_LT(seconds, 1.0);
}

}  // namespace
}  // namespace qopt
