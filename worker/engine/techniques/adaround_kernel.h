// The per-weight arithmetic of one AdaRound iteration, on plain float arrays (no LibTorch):
// the gradient through the soft weight, h(V) and the regulariser, Adam's update of V, and
// the soft weight of the updated V for the next iteration, all in one pass over the
// weights. Compiled for AVX-512, AVX2 and baseline x86-64 and picked at load time, with
// its own vectorizable exp / log, and with denormals flushed to zero (Adam's moments of
// saturated weights decay through the denormal range, which made long runs 2x slower).
#pragma once

#include <cstdint>

namespace qopt {
namespace adaround_kernel {

/// Constants of the rectified sigmoid h(V) = clamp(sigmoid(V) (zeta - gamma) + gamma, 0, 1).
inline constexpr float kZeta = 1.1f;
inline constexpr float kGamma = -0.1f;

/// One layer's rounding state. Arrays have `count` elements, except `scale` / `zero_point`:
/// one per channel, each channel `per_channel` consecutive weights (per-tensor: one channel).
struct State {
  int64_t count = 0;
  int64_t per_channel = 0;
  float* v = nullptr;           // the rounding variable
  float* adam_m = nullptr;      // Adam's first moment
  float* adam_s = nullptr;      // Adam's second moment
  float* sig = nullptr;         // sigmoid(V) of the current V
  float* soft_weight = nullptr;  // scale * (clamp(floor(W / scale) + h(V) + zp, 0, n) - zp)
  const float* w_floor = nullptr;  // floor(W / scale)
  const float* scale = nullptr;
  const float* zero_point = nullptr;
  float num_steps = 0;  // n: the grid's largest integer
};

/// One iteration's settings. `beta` 0 = no regulariser (warm start).
struct StepSettings {
  float beta = 0;
  float reg_param = 0;
  float learning_rate = 0;
  float bias_correction1 = 1;  // 1 - beta1^t
  float bias_correction2 = 1;  // 1 - beta2^t
};

/// sig and soft_weight from V, for elements [begin, end).
void InitSoftWeight(const State& state, int64_t begin, int64_t end);

/// Adam step on V from the soft weight's gradient `grad_w`, then sig and soft_weight of the
/// new V, for elements [begin, end).
void Step(const State& state, const float* grad_w, const StepSettings& settings, int64_t begin, int64_t end);

/// The kernel's exp and log, exposed for tests: relative error below 1e-6 over
/// exp's [-87, 88] and log's normal positive floats.
float Exp(float x);
float Log(float x);

}  // namespace adaround_kernel
}  // namespace qopt
