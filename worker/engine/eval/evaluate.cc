#include "eval/evaluate.h"

#include <chrono>

#include <ATen/ATen.h>

#include "eval/metrics.h"
#include "status.h"

namespace qopt {

absl::StatusOr<Figures> EvaluateSim(QuantSim& sim, const std::vector<Batch>& batches, size_t n,
                                    const std::function<absl::Status(size_t, size_t)>& on_batch) {
  n = std::min(n, batches.size());
  AccuracyMeter float_accuracy, sim_accuracy;
  FidelityMeter fidelity;
  double float_seconds = 0.0, sim_seconds = 0.0;
  bool labelled = true;
  auto seconds = [](std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  for (size_t b = 0; b < n; ++b) {
    const Batch& batch = batches[b];
    auto t0 = std::chrono::steady_clock::now();
    ASSIGN_OR_RETURN(at::Tensor ref, sim.ForwardFloat(batch.inputs));
    float_seconds += seconds(t0);
    t0 = std::chrono::steady_clock::now();
    ASSIGN_OR_RETURN(at::Tensor q, sim.Forward(batch.inputs));
    sim_seconds += seconds(t0);
    fidelity.Add(ref, q);
    labelled = labelled && batch.labels.has_value() && ref.dim() == 2;
    if (labelled) {
      float_accuracy.Add(ref, *batch.labels);
      sim_accuracy.Add(q, *batch.labels);
    }
    if (on_batch) RETURN_IF_ERROR(on_batch(b + 1, n));
  }
  Figures out;
  const Fidelity f = fidelity.Result();
  out["output_sqnr_db"] = f.output_sqnr_db;
  out["top1_agreement"] = f.top1_agreement;
  out["mean_kl"] = f.mean_kl;
  out["eval_samples"] = static_cast<double>(f.samples);
  if (labelled && n > 0) {
    const Accuracy fa = float_accuracy.Result(), sa = sim_accuracy.Result();
    out["fp32_top1"] = fa.top1;
    out["fp32_top5"] = fa.top5;
    out["top1"] = sa.top1;
    out["top5"] = sa.top5;
  }
  out["float_seconds"] = float_seconds;
  out["simulated_seconds"] = sim_seconds;
  return out;
}

absl::StatusOr<Figures> EvaluateModel(const ModelFn& model, const std::vector<Batch>& batches, size_t n,
                                      const std::vector<at::Tensor>* reference,
                                      const std::function<absl::Status(size_t, size_t)>& on_batch) {
  n = std::min(n, batches.size());
  if (reference != nullptr && reference->size() < n) {
    return absl::InvalidArgumentError("fewer reference outputs than batches to evaluate");
  }
  AccuracyMeter accuracy;
  FidelityMeter fidelity;
  bool labelled = true;
  int64_t samples = 0;
  const auto start = std::chrono::steady_clock::now();
  for (size_t b = 0; b < n; ++b) {
    const Batch& batch = batches[b];
    ASSIGN_OR_RETURN(const at::Tensor out, model(batch.inputs));
    if (reference != nullptr) fidelity.Add((*reference)[b], out);
    labelled = labelled && batch.labels.has_value() && out.dim() == 2;
    if (labelled) accuracy.Add(out, *batch.labels);
    samples += batch.inputs.size(0);
    if (on_batch) RETURN_IF_ERROR(on_batch(b + 1, n));
  }
  Figures figures;
  if (labelled && n > 0) {
    const Accuracy a = accuracy.Result();
    figures["top1"] = a.top1;
    figures["top5"] = a.top5;
  }
  if (reference != nullptr) {
    const Fidelity f = fidelity.Result();
    figures["output_sqnr_db"] = f.output_sqnr_db;
    figures["top1_agreement"] = f.top1_agreement;
    figures["mean_kl"] = f.mean_kl;
  }
  figures["eval_samples"] = static_cast<double>(samples);
  figures["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return figures;
}

std::tuple<std::string, double, double> HeadlineFigure(const Figures& f) {
  if (f.count("top1")) return {"top1", f.at("fp32_top1"), f.at("top1")};
  return {"top1_agreement", 1.0, f.count("top1_agreement") ? f.at("top1_agreement") : 0.0};
}

}  // namespace qopt
