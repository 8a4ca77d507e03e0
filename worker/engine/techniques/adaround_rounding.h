// What AdaRound learns for one layer -- the rounding variables V with Adam's moments --
// and the soft weight they give,
//   W~ = scale * (clamp(floor(W / scale) + h(V) + zero_point, 0, n) - zero_point).
// On the CPU each iteration is one vectorized pass over the weights (adaround_kernel); on
// other devices, or with a channel axis other than the first, the same arithmetic runs as
// tensor ops.
#pragma once

#include <ATen/core/Tensor.h>

#include "techniques/adaround_kernel.h"

namespace qopt {
namespace internal_adaround {

class RoundingState {
 public:
  enum class Backend {
    kAuto,       // the CPU kernel where it applies, tensor ops elsewhere
    kTensorOps,  // tensor ops on any device (and the reference the kernel is tested against)
  };

  /// `v`: the initial rounding variables, shaped as the weight; `w_floor` = floor(W /
  /// scale); `scale` and `zero_point` broadcast over the weight (scalars, or per channel
  /// shaped [C, 1, ...] along the channel axis); `num_steps` = n, the grid's largest
  /// integer. All float, on one device.
  RoundingState(at::Tensor v, at::Tensor w_floor, at::Tensor scale, at::Tensor zero_point, double num_steps,
                Backend backend = Backend::kAuto);

  /// The soft weight of the current V.
  const at::Tensor& soft_weight() const { return soft_weight_; }
  const at::Tensor& v() const { return v_; }
  bool uses_kernel() const { return kernel_; }

  /// One Adam step on V from the soft weight's gradient `grad_w`, then the new soft
  /// weight. `beta` 0 = no regulariser (warm start); `t` = the 1-based iteration.
  void Step(const at::Tensor& grad_w, double beta, int t, double reg_param, double learning_rate);

 private:
  void SoftWeightByTensorOps();

  bool kernel_ = false;
  double num_steps_;
  at::Tensor v_, w_floor_, scale_, zero_point_, adam_m_, adam_s_, sig_, soft_weight_;
  adaround_kernel::State state_;  // views of the tensors above, for the kernel
};

}  // namespace internal_adaround
}  // namespace qopt
