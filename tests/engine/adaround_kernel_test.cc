#include "techniques/adaround_kernel.h"

#include "techniques/adaround_rounding.h"

#include <cmath>
#include <limits>
#include <vector>

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

namespace qopt {
namespace {

TEST(AdaRoundKernel, ExpAndLogAreAccurate) {
  double worst_exp = 0, worst_log = 0;
  for (float x = -87.0f; x <= 88.0f; x += 0.0137f) {
    worst_exp = std::max(worst_exp, std::fabs(adaround_kernel::Exp(x) / std::exp(double{x}) - 1.0));
  }
  for (float x = std::numeric_limits<float>::min(); x < 3e38f; x *= 1.37f) {
    const double want = std::log(double{x});
    worst_log = std::max(worst_log, std::fabs(adaround_kernel::Log(x) - want) / std::max(1.0, std::fabs(want)));
  }
  for (float x = 0.5f; x < 2.0f; x += 1e-4f) {  // near 1, where log is small: absolute error
    worst_log = std::max(worst_log, std::fabs(adaround_kernel::Log(x) - std::log(double{x})));
  }
  EXPECT_LT(worst_exp, 1e-6);
  EXPECT_LT(worst_log, 1e-6);
  EXPECT_EQ(adaround_kernel::Exp(-1000.0f), adaround_kernel::Exp(-87.0f)) << "clamped, not garbage";
}

// The same iteration in double precision with ATen's ops, written the way the paper states it.
struct Reference {
  at::Tensor v, m, s, w_floor, scale, zp;
  double n = 0;

  at::Tensor H() const { return (at::sigmoid(v) * (1.1 - -0.1) + -0.1).clamp(0.0, 1.0); }
  at::Tensor SoftWeight() const { return ((w_floor + H() + zp).clamp(0.0, n) - zp) * scale; }
  void Step(const at::Tensor& grad_w, double beta, double reg, double lr, int t) {
    const at::Tensor vv = v.clone().requires_grad_(true);
    const at::Tensor h = (at::sigmoid(vv) * 1.2 - 0.1).clamp(0.0, 1.0);
    const at::Tensor soft = ((w_floor + h + zp).clamp(0.0, n) - zp) * scale;
    at::Tensor loss = (soft * grad_w).sum();  // d loss / d soft = grad_w
    if (beta > 0) loss = loss + reg * (1 - (2 * h - 1).abs().pow(beta)).sum();
    loss.backward();
    const at::Tensor g = vv.grad();
    m = 0.9 * m + 0.1 * g;
    s = 0.999 * s + 0.001 * g * g;
    v = v - lr * (m / (1 - std::pow(0.9, t))) / ((s / (1 - std::pow(0.999, t))).sqrt() + 1e-8);
  }
};

TEST(AdaRoundKernel, StepMatchesTheAutogradReferencePerChannel) {
  at::manual_seed(3);
  const int64_t channels = 5, per = 37;  // odd sizes: channel runs straddle the vector width
  const double n = 15;
  Reference ref;
  ref.n = n;
  ref.scale = at::rand({channels, 1}, at::kDouble) * 0.1 + 0.01;
  ref.zp = at::randint(0, 16, {channels, 1}, at::kDouble);
  // Some weights off the grid on both sides, so the clamp at 0 and n is exercised.
  ref.w_floor = at::randint(-20, 20, {channels, per}, at::kDouble);
  ref.v = at::randn({channels, per}, at::kDouble) * 4;  // some h saturated at 0 or 1
  ref.m = at::zeros({channels, per}, at::kDouble);
  ref.s = at::zeros({channels, per}, at::kDouble);

  at::Tensor v = ref.v.to(at::kFloat).contiguous(), m = at::zeros_like(v), s = at::zeros_like(v);
  at::Tensor sig = at::empty_like(v), soft = at::empty_like(v);
  const at::Tensor w_floor = ref.w_floor.to(at::kFloat).contiguous();
  const at::Tensor scale = ref.scale.to(at::kFloat).contiguous(), zp = ref.zp.to(at::kFloat).contiguous();
  const adaround_kernel::State st{v.numel(),           per,
                                  v.data_ptr<float>(),  m.data_ptr<float>(),
                                  s.data_ptr<float>(),  sig.data_ptr<float>(),
                                  soft.data_ptr<float>(), w_floor.data_ptr<float>(),
                                  scale.data_ptr<float>(), zp.data_ptr<float>(),
                                  static_cast<float>(n)};
  // Two ranges, split inside a channel, as the threads would.
  adaround_kernel::InitSoftWeight(st, 0, 50);
  adaround_kernel::InitSoftWeight(st, 50, st.count);
  EXPECT_TRUE(at::allclose(soft.to(at::kDouble), ref.SoftWeight(), 1e-5, 1e-6));

  const double reg = 0.01, lr = 0.05;  // a large rate, so that V moves visibly
  for (int t = 1; t <= 20; ++t) {
    const double beta = t <= 5 ? 0.0 : 20.0 - t * 0.5;  // warm start, then annealed
    const at::Tensor grad = at::randn({channels, per}, at::kDouble) * 0.3;
    const at::Tensor grad_f = grad.to(at::kFloat).contiguous();
    adaround_kernel::StepSettings set;
    set.beta = static_cast<float>(beta);
    set.reg_param = static_cast<float>(reg);
    set.learning_rate = static_cast<float>(lr);
    set.bias_correction1 = static_cast<float>(1 - std::pow(0.9, t));
    set.bias_correction2 = static_cast<float>(1 - std::pow(0.999, t));
    adaround_kernel::Step(st, grad_f.data_ptr<float>(), set, 0, 100);
    adaround_kernel::Step(st, grad_f.data_ptr<float>(), set, 100, st.count);
    ref.Step(grad, beta, reg, lr, t);
    ASSERT_TRUE(at::allclose(v.to(at::kDouble), ref.v, 1e-4, 1e-5))
        << "iteration " << t << ": max diff " << (v.to(at::kDouble) - ref.v).abs().max().item<double>();
    ASSERT_TRUE(at::allclose(soft.to(at::kDouble), ref.SoftWeight(), 1e-4, 1e-5)) << "iteration " << t;
  }
  // The comparison covered saturated weights (h at 0 or 1, no gradient through the clamp).
  EXPECT_GT((ref.H() == 0).sum().item<int64_t>() + (ref.H() == 1).sum().item<int64_t>(), 0);
}

// The CPU kernel and the tensor-op version (what runs on a GPU) agree over many steps,
// per channel and per tensor, through the warm start and the annealed regulariser.
TEST(AdaRoundKernel, KernelAndTensorOpsAgree) {
  using internal_adaround::RoundingState;
  at::manual_seed(5);
  const at::Tensor w = at::randn({24, 16, 3, 3}) * 0.2;
  for (const bool per_channel : {true, false}) {
    const at::Tensor scale = per_channel ? at::rand({24, 1, 1, 1}) * 0.02 + 0.01 : at::full({}, 0.03);
    const at::Tensor zp = per_channel ? at::full({24, 1, 1, 1}, 8.0) : at::full({}, 7.0);
    const at::Tensor w_floor = at::floor(w / scale);
    const at::Tensor rest = w / scale - w_floor;
    const at::Tensor v = -at::log(1.2 / (rest + 0.1) - 1.0);
    RoundingState kernel(v.clone(), w_floor, scale, zp, 15);
    RoundingState ops(v.clone(), w_floor, scale, zp, 15, RoundingState::Backend::kTensorOps);
    ASSERT_TRUE(kernel.uses_kernel());
    ASSERT_FALSE(ops.uses_kernel());
    ASSERT_TRUE(at::allclose(kernel.soft_weight(), ops.soft_weight(), 1e-5, 1e-6));
    for (int t = 1; t <= 200; ++t) {
      const at::Tensor grad = at::randn_like(w) * 0.05 + (ops.soft_weight() - w) * 0.5;  // pulls toward W
      const double beta = t <= 40 ? 0.0 : 2.0 + 18.0 * (200 - t) / 160.0;
      kernel.Step(grad, beta, t, 0.01, 0.01);
      ops.Step(grad, beta, t, 0.01, 0.01);
    }
    // A V that reaches h's saturation point a step earlier in one of them stops getting a
    // gradient there while Adam's momentum still moves it: such V may part (their soft
    // weights, saturated in both, do not). Every other V agrees.
    const int64_t parted = ((kernel.v() - ops.v()).abs() > 1e-3).sum().item<int64_t>();
    EXPECT_LE(parted, w.numel() / 1000) << "per channel " << per_channel;
    EXPECT_TRUE(at::allclose(kernel.soft_weight(), ops.soft_weight(), 1e-4, 1e-5)) << per_channel;
    EXPECT_TRUE(at::equal(kernel.v() >= 0, ops.v() >= 0)) << "the same rounding decisions";
  }
}

#if defined(__x86_64__)
TEST(AdaRoundKernel, LeavesTheCallersFloatingPointModeAlone) {
  const unsigned before = _mm_getcsr();
  float v = 1, m = 0, s = 0, sig = 0, soft = 0, wf = 3, sc = 0.1f, zp = 0;
  adaround_kernel::State st{1, 1, &v, &m, &s, &sig, &soft, &wf, &sc, &zp, 15};
  adaround_kernel::InitSoftWeight(st, 0, 1);
  const float g = 0.5f;
  adaround_kernel::Step(st, &g, adaround_kernel::StepSettings{20, 0.01f, 1e-3f, 0.1f, 0.001f}, 0, 1);
  EXPECT_EQ(_mm_getcsr(), before) << "flush-to-zero must not leak to the caller's thread";
}
#endif

}  // namespace
}  // namespace qopt
