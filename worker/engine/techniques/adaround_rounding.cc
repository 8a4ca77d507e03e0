#include "techniques/adaround_rounding.h"

#include <cmath>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

namespace qopt {
namespace internal_adaround {
namespace {

// The kernel's pass over a range of weights is cheap per weight; below this many weights
// one thread does the whole layer.
constexpr int64_t kGrain = 16384;
constexpr double kBeta1 = 0.9, kBeta2 = 0.999, kEps = 1e-8;
// In float, as the kernel computes them.
constexpr double kSpan = adaround_kernel::kZeta - adaround_kernel::kGamma;
constexpr double kGamma = adaround_kernel::kGamma;

}  // namespace

RoundingState::RoundingState(at::Tensor v, at::Tensor w_floor, at::Tensor scale, at::Tensor zero_point,
                             double num_steps, Backend backend)
    : num_steps_(num_steps),
      v_(v.contiguous()),
      w_floor_(w_floor.contiguous()),
      scale_(std::move(scale)),
      zero_point_(std::move(zero_point)) {
  adam_m_ = at::zeros_like(v_);
  adam_s_ = at::zeros_like(v_);
  const int64_t channels = scale_.numel();
  // The kernel walks the weights channel by channel: the channel axis must come first.
  const bool channel_first = channels == 1 || (scale_.dim() > 0 && scale_.size(0) == channels);
  kernel_ = backend == Backend::kAuto && v_.device().is_cpu() && v_.scalar_type() == at::kFloat && channel_first &&
            v_.numel() % channels == 0;
  if (!kernel_) {
    SoftWeightByTensorOps();
    return;
  }
  scale_ = scale_.flatten().contiguous();
  zero_point_ = zero_point_.flatten().contiguous();
  sig_ = at::empty_like(v_);
  soft_weight_ = at::empty_like(v_);
  state_.count = v_.numel();
  state_.per_channel = v_.numel() / channels;
  state_.v = v_.data_ptr<float>();
  state_.adam_m = adam_m_.data_ptr<float>();
  state_.adam_s = adam_s_.data_ptr<float>();
  state_.sig = sig_.data_ptr<float>();
  state_.soft_weight = soft_weight_.data_ptr<float>();
  state_.w_floor = w_floor_.data_ptr<float>();
  state_.scale = scale_.data_ptr<float>();
  state_.zero_point = zero_point_.data_ptr<float>();
  state_.num_steps = static_cast<float>(num_steps);
  at::parallel_for(0, state_.count, kGrain,
                   [&](int64_t begin, int64_t end) { adaround_kernel::InitSoftWeight(state_, begin, end); });
}

void RoundingState::SoftWeightByTensorOps() {
  sig_ = at::sigmoid(v_);
  const at::Tensor h = (sig_ * kSpan + kGamma).clamp_(0.0, 1.0);
  soft_weight_ = ((w_floor_ + h + zero_point_).clamp_(0.0, num_steps_) - zero_point_).mul_(scale_);
}

void RoundingState::Step(const at::Tensor& grad_w, double beta, int t, double reg_param, double learning_rate) {
  const double c1 = 1.0 - std::pow(kBeta1, t), c2 = 1.0 - std::pow(kBeta2, t);
  if (kernel_) {
    adaround_kernel::StepSettings set;
    set.beta = static_cast<float>(beta);
    set.reg_param = static_cast<float>(reg_param);
    set.learning_rate = static_cast<float>(learning_rate);
    set.bias_correction1 = static_cast<float>(c1);
    set.bias_correction2 = static_cast<float>(c2);
    const at::Tensor g = grad_w.to(at::kFloat).contiguous();
    const float* gw = g.data_ptr<float>();
    at::parallel_for(0, state_.count, kGrain,
                     [&](int64_t begin, int64_t end) { adaround_kernel::Step(state_, gw, set, begin, end); });
    return;
  }
  // The same arithmetic as adaround_kernel's Step, as tensor ops.
  const at::Tensor h_raw = sig_ * kSpan + kGamma;
  const at::Tensor h = h_raw.clamp(0.0, 1.0);
  const at::Tensor q = w_floor_ + h + zero_point_;
  at::Tensor dh = grad_w * scale_ * at::logical_and(q >= 0.0, q <= num_steps_);
  if (beta > 0) {
    // d/dh of reg * (1 - |2h - 1|^beta) = -2 reg beta |2h - 1|^(beta - 1) sign(2h - 1)
    const at::Tensor u = h * 2.0 - 1.0;
    dh = dh - u.sign() * u.abs().clamp_min(1e-30).pow(beta - 1.0) * (2.0 * reg_param * beta);
  }
  const at::Tensor g = dh * kSpan * sig_ * (1.0 - sig_) * at::logical_and(h_raw >= 0.0, h_raw <= 1.0);
  adam_m_.mul_(kBeta1).add_(g, 1.0 - kBeta1);
  adam_s_.mul_(kBeta2).addcmul_(g, g, 1.0 - kBeta2);
  v_.sub_((adam_m_ / c1).div_((adam_s_ / c2).sqrt_().add_(kEps)).mul_(learning_rate));
  SoftWeightByTensorOps();
}

}  // namespace internal_adaround
}  // namespace qopt
