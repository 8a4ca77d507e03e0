// Evaluation of a model's outputs: accuracy against labels, and fidelity of a quantized
// model's outputs to the floating-point model's on the same inputs.
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>

namespace qopt {

struct Accuracy {
  int64_t samples = 0;
  // Classes rank by logit, ties by index (the lower first): top-1 is `argmax == label`,
  // as PyTorch's argmax picks the first maximal index.
  double top1 = 0.0;  // 0..1
  double top5 = 0.0;  // 0..1 (top-k with k = min(5, classes))
};

struct Fidelity {
  int64_t samples = 0;
  double output_sqnr_db = 0.0;  // 10 log10(sum y^2 / sum (y - y_q)^2)
  double top1_agreement = 0.0;  // share of samples whose arg-max agrees
  double mean_kl = 0.0;         // mean KL(softmax(y) || softmax(y_q)), nats
};

/// Accumulates accuracy over batches of logits (N, classes) and labels (N).
class AccuracyMeter {
 public:
  void Add(const at::Tensor& logits, const at::Tensor& labels);
  Accuracy Result() const;

 private:
  int64_t samples_ = 0;
  double top1_ = 0.0, top5_ = 0.0;
};

/// Accumulates fidelity of `quantized` to `reference` outputs over batches. Outputs of
/// any shape give SQNR; (N, classes) outputs also give agreement and KL.
class FidelityMeter {
 public:
  void Add(const at::Tensor& reference, const at::Tensor& quantized);
  Fidelity Result() const;

 private:
  int64_t samples_ = 0, classified_ = 0;
  double signal_ = 0.0, noise_ = 0.0, agree_ = 0.0, kl_ = 0.0;
};

}  // namespace qopt
