#include "eval/evaluate.h"

#include <chrono>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "eval/metrics.h"
#include "status.h"

namespace qopt {

absl::StatusOr<Figures> EvaluateSim(QuantSim& sim, const std::vector<Batch>& batches, size_t n,
                                    TaskMetric metric,
                                    const std::function<absl::Status(size_t, size_t)>& on_batch) {
  n = std::min(n, batches.size());
  TaskMeter float_task(metric), sim_task(metric);
  FidelityMeter fidelity;
  double float_seconds = 0.0, sim_seconds = 0.0;
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
    RETURN_IF_ERROR(float_task.Add(ref, batch.labels));
    RETURN_IF_ERROR(sim_task.Add(q, batch.labels));
    if (on_batch) RETURN_IF_ERROR(on_batch(b + 1, n));
  }
  Figures out;
  const Fidelity f = fidelity.Result();
  out["output_sqnr_db"] = f.output_sqnr_db;
  out["top1_agreement"] = f.top1_agreement;
  out["mean_kl"] = f.mean_kl;
  out["eval_samples"] = static_cast<double>(f.samples);
  float_task.Report("fp32_", out);
  sim_task.Report("", out);
  out["float_seconds"] = float_seconds;
  out["simulated_seconds"] = sim_seconds;
  return out;
}

absl::StatusOr<Figures> EvaluateModel(const ModelFn& model, const std::vector<Batch>& batches, size_t n,
                                      const std::vector<at::Tensor>* reference, TaskMetric metric,
                                      const std::function<absl::Status(size_t, size_t)>& on_batch) {
  n = std::min(n, batches.size());
  if (reference != nullptr && reference->size() < n) {
    return absl::InvalidArgumentError("fewer reference outputs than batches to evaluate");
  }
  TaskMeter task(metric);
  FidelityMeter fidelity;
  int64_t samples = 0;
  const auto start = std::chrono::steady_clock::now();
  for (size_t b = 0; b < n; ++b) {
    const Batch& batch = batches[b];
    ASSIGN_OR_RETURN(const at::Tensor out, model(batch.inputs));
    if (reference != nullptr) fidelity.Add((*reference)[b], out);
    RETURN_IF_ERROR(task.Add(out, batch.labels));
    samples += batch.inputs.size(0);
    if (on_batch) RETURN_IF_ERROR(on_batch(b + 1, n));
  }
  Figures figures;
  task.Report("", figures);
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
  for (const char* name : {"top1", "psnr_db", "miou"}) {
    if (f.count(name) && f.count(absl::StrCat("fp32_", name))) {
      return {name, f.at(absl::StrCat("fp32_", name)), f.at(name)};
    }
  }
  return {"top1_agreement", 1.0, f.count("top1_agreement") ? f.at("top1_agreement") : 0.0};
}

}  // namespace qopt
