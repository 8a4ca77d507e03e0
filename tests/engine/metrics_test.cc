// Evaluation maths on hand-computed cases.
#include "eval/metrics.h"

#include <cmath>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>

#include "test_util.h"

namespace qopt {
namespace {

using ::qopt::testing::IsOk;
using ::qopt::testing::StatusIs;
using ::testing::HasSubstr;

TEST(AccuracyMeterTest, TopOneAndTopFive) {
  // Six classes, three samples: sample 0 right at top-1; sample 1 its label is 2nd;
  // sample 2 its label is the lowest score (outside the top 5).
  const at::Tensor logits = at::tensor({9.f, 1.f, 2.f, 3.f, 4.f, 5.f,   //
                                        1.f, 8.f, 9.f, 0.f, 0.f, 0.f,   //
                                        5.f, 4.f, 3.f, 2.f, 1.f, 0.f})
                                .reshape({3, 6});
  AccuracyMeter m;
  m.Add(logits, at::tensor({0, 1, 5}, at::kLong));
  const Accuracy a = m.Result();
  EXPECT_EQ(a.samples, 3);
  EXPECT_DOUBLE_EQ(a.top1, 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(a.top5, 2.0 / 3.0);
  // Accumulates over batches.
  m.Add(at::tensor({0.f, 1.f, 0.f, 0.f, 0.f, 0.f}).reshape({1, 6}), at::tensor({1}, at::kLong));
  EXPECT_DOUBLE_EQ(m.Result().top1, 2.0 / 4.0);
}

TEST(AccuracyMeterTest, TiesGoToTheLowerIndexAsArgmaxDoes) {
  // Quantized logits tie often. Sample 0: classes 1 and 3 tie at the top, argmax says 1,
  // so label 1 is a top-1 hit and label 3 is not. Sample 1: seven classes tie; label 4
  // ranks 5th (indices 0..3 before it) and is in the top 5, label 5 ranks 6th.
  const at::Tensor tied = at::tensor({0.f, 7.f, 2.f, 7.f, 1.f, 0.f, 0.f}).reshape({1, 7});
  const at::Tensor flat = at::full({1, 7}, 0.5f);
  for (const auto& [logits, label, top1, top5] :
       std::vector<std::tuple<at::Tensor, int64_t, double, double>>{
           {tied, 1, 1.0, 1.0}, {tied, 3, 0.0, 1.0}, {flat, 4, 0.0, 1.0}, {flat, 5, 0.0, 0.0}}) {
    AccuracyMeter m;
    m.Add(logits, at::tensor({label}, at::kLong));
    EXPECT_DOUBLE_EQ(m.Result().top1, top1) << "label " << label;
    EXPECT_DOUBLE_EQ(m.Result().top5, top5) << "label " << label;
    EXPECT_EQ(m.Result().top1 == 1.0, logits.argmax(1).item<int64_t>() == label);
  }
  // A NaN logit for the label is never a hit.
  AccuracyMeter nan;
  nan.Add(at::tensor({NAN, 0.f}).reshape({1, 2}), at::tensor({0}, at::kLong));
  EXPECT_DOUBLE_EQ(nan.Result().top5, 0.0);
}

TEST(FidelityMeterTest, SqnrAgreementAndKl) {
  // y = (3, 4) has energy 25; the error (0, 0.5) has energy 0.25: SQNR = 20 dB.
  const at::Tensor ref = at::tensor({3.f, 4.f}).reshape({1, 2});
  const at::Tensor q = at::tensor({3.f, 3.5f}).reshape({1, 2});
  FidelityMeter m;
  m.Add(ref, q);
  Fidelity f = m.Result();
  EXPECT_NEAR(f.output_sqnr_db, 20.0, 1e-9);
  EXPECT_DOUBLE_EQ(f.top1_agreement, 1.0);  // both pick class 1
  // KL(p || q) with p = softmax(3, 4) = (1 - s(1), s(1)), q = softmax(3, 3.5) = (1 - s(.5), s(.5)),
  // s the logistic function.
  auto logistic = [](double z) { return 1.0 / (1.0 + std::exp(-z)); };
  const double p1 = logistic(1.0), p0 = 1.0 - p1, q1 = logistic(0.5), q0 = 1.0 - q1;
  const double kl = p0 * std::log(p0 / q0) + p1 * std::log(p1 / q1);
  EXPECT_NEAR(f.mean_kl, kl, 1e-9);

  FidelityMeter same;
  same.Add(ref, ref);
  EXPECT_TRUE(std::isinf(same.Result().output_sqnr_db));
  EXPECT_DOUBLE_EQ(same.Result().mean_kl, 0.0);
}

TEST(FidelityMeterTest, DisagreementIsCounted) {
  const at::Tensor ref = at::tensor({1.f, 0.f, 0.f, 1.f}).reshape({2, 2});
  const at::Tensor q = at::tensor({1.f, 0.f, 1.f, 0.f}).reshape({2, 2});
  FidelityMeter m;
  m.Add(ref, q);
  EXPECT_DOUBLE_EQ(m.Result().top1_agreement, 0.5);
  EXPECT_NEAR(m.Result().output_sqnr_db, 10.0 * std::log10(2.0 / 2.0), 1e-12);
}

TEST(PsnrMeterTest, MeanOfPerImagePsnrWithClampedOutputs) {
  // Image 0 (four pixels): errors 0.1 on one pixel, MSE = 0.01 / 4 = 0.0025 -> 26.0206 dB.
  // Image 1: output 1.5 is clamped to 1 (error 0), -0.2 to 0 (error 0.2 against target
  // 0.2): MSE = 0.04 / 4 = 0.01 -> 20 dB. Mean: 23.0103 dB. An exact image counts 100 dB.
  const at::Tensor target = at::tensor({0.5f, 0.5f, 0.5f, 0.5f, 1.f, 0.2f, 0.f, 0.f}).reshape({2, 1, 2, 2});
  const at::Tensor out = at::tensor({0.6f, 0.5f, 0.5f, 0.5f, 1.5f, -0.2f, 0.f, 0.f}).reshape({2, 1, 2, 2});
  PsnrMeter m;
  m.Add(out, target);
  EXPECT_EQ(m.samples(), 2);
  const double want = (10 * std::log10(1 / 0.0025) + 20.0) / 2;
  EXPECT_NEAR(m.MeanDb(), want, 1e-4);
  m.Add(target.slice(0, 0, 1), target.slice(0, 0, 1));
  EXPECT_NEAR(m.MeanDb(), (2 * want + 100.0) / 3, 1e-4);
}

TEST(SegmentationMeterTest, MeanIouFromOneConfusionMatrix) {
  // Three classes over two batches of one 2x3 image each. Labels / predictions:
  //   batch 0: labels 0 0 1 / 1 2 2, predicted 0 1 1 / 1 2 0
  //   batch 1: labels 0 0 0 / 255 2 2 (255 is not counted), predicted 0 0 0 / 2 2 2
  // Counted pixels 11.
  // Class 0: labelled 0 at five pixels, predicted 0 at four of them and at one class-2
  //   pixel: TP 4, FN 1, FP 1 -> IoU 4 / 6.
  // Class 1: labelled at two pixels, both predicted 1; predicted 1 also at one class-0
  //   pixel: TP 2, FP 1 -> 2 / 3.
  // Class 2: labelled at four, predicted 2 at three (one went to 0): TP 3, FN 1 -> 3 / 4.
  // mIoU = (4/6 + 2/3 + 3/4) / 3; pixel accuracy 9 / 11.
  // Foreground (1 or 2 vs 0): labelled fg 6, predicted fg 6 on 5 of them plus the class-0
  //   pixel predicted 1: intersection 5, union 7.
  auto logits_of = [](std::vector<int64_t> classes) {
    return at::one_hot(at::tensor(classes, at::kLong), 3).to(at::kFloat).reshape({1, 2, 3, 3}).permute({0, 3, 1, 2});
  };
  SegmentationMeter m;
  m.Add(logits_of({0, 1, 1, 1, 2, 0}), at::tensor({0, 0, 1, 1, 2, 2}, at::kLong).reshape({1, 2, 3}));
  m.Add(logits_of({0, 0, 0, 2, 2, 2}), at::tensor({0, 0, 0, 255, 2, 2}, at::kLong).reshape({1, 2, 3}));
  const Segmentation s = m.Result();
  EXPECT_EQ(s.pixels, 11);
  EXPECT_EQ(s.classes_present, 3);
  EXPECT_NEAR(s.miou, (4.0 / 6 + 2.0 / 3 + 3.0 / 4) / 3, 1e-12);
  EXPECT_NEAR(s.pixel_accuracy, 9.0 / 11, 1e-12);
  EXPECT_NEAR(s.foreground_iou, 5.0 / 7, 1e-12);
  // A class never labelled nor predicted does not count: four channels, class 3 unused.
  SegmentationMeter four;
  four.Add(at::cat({logits_of({0, 1, 1, 1, 2, 0}), at::zeros({1, 1, 2, 3})}, 1),
           at::tensor({0, 0, 1, 1, 2, 2}, at::kLong).reshape({1, 2, 3}));
  EXPECT_EQ(four.Result().classes_present, 3);
}

TEST(TaskMetricTest, ToldFromTheDataOrCheckedAgainstIt) {
  const at::Tensor logits = at::zeros({4, 10}), maps = at::zeros({4, 11, 8, 8}), images = at::zeros({4, 1, 8, 8});
  const at::Tensor classes = at::zeros({4}, at::kLong), pixel_classes = at::zeros({4, 8, 8}, at::kLong);
  auto resolve = [](TaskMetric m, const at::Tensor& out, const at::Tensor& labels) {
    return ResolveTaskMetric(m, out, labels);
  };
  EXPECT_EQ(*resolve(TaskMetric::kAuto, logits, classes), TaskMetric::kTop1);
  EXPECT_EQ(*resolve(TaskMetric::kAuto, maps, pixel_classes), TaskMetric::kMiou);
  EXPECT_EQ(*resolve(TaskMetric::kAuto, images, images), TaskMetric::kPsnr);
  EXPECT_EQ(*resolve(TaskMetric::kAuto, maps, classes), std::nullopt) << "no metric fits: no task figure";
  EXPECT_THAT(resolve(TaskMetric::kPsnr, logits, classes),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("metric psnr needs float targets shaped like the outputs; the model gives Float (4, 10) "
                                 "and the labels are Long (4)")));
  EXPECT_THAT(resolve(TaskMetric::kMiou, maps, at::zeros({4, 7, 8}, at::kLong)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("metric miou needs integer labels (N, ...)")));
  EXPECT_THAT(ParseTaskMetric("iou"), StatusIs(absl::StatusCode::kInvalidArgument,
                                               HasSubstr("metric 'iou' is not one of auto, top1, psnr, miou")));

  // The meter reports the figures of the metric it resolved, with the prefix given.
  TaskMeter meter;
  ASSERT_THAT(meter.Add(images + 0.1, images), IsOk());
  std::map<std::string, double> figures;
  meter.Report("fp32_", figures);
  ASSERT_EQ(figures.size(), 1u);
  EXPECT_NEAR(figures.at("fp32_psnr_db"), 20.0, 1e-4);
  // A requested metric without labels is an error; auto then reports nothing.
  EXPECT_THAT(TaskMeter(TaskMetric::kMiou).Add(maps, std::nullopt),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("metric miou needs labels; the data has none")));
  TaskMeter unlabelled;
  ASSERT_THAT(unlabelled.Add(logits, std::nullopt), IsOk());
  EXPECT_EQ(unlabelled.metric(), std::nullopt);
}

}  // namespace
}  // namespace qopt
