// evaluate: accuracy and fidelity of the simulation against the floating-point model; its
// figures become the run's metrics.
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "recipe/steps/run_context.h"
#include "status.h"

namespace qopt {

absl::Status RunEvaluateStep(const v1::Step& step, RunContext& run) {
  ASSIGN_OR_RETURN(const std::vector<Batch>* data, run.Evaluation());
  const size_t n = Limit(step.evaluate().num_batches(), data->size());
  ASSIGN_OR_RETURN(run.metrics, EvaluateSim(*run.sim, *data, n, run.metric(), [&](size_t done, size_t total) {
    return run.Progress(static_cast<double>(done) / total, absl::StrCat("batch ", done, "/", total));
  }));
  const Figures& f = run.metrics;
  auto& figures = *run.part().mutable_figures();
  figures.insert(f.begin(), f.end());
  figures["batches"] = n;
  std::string line = absl::StrFormat("evaluate: output SQNR %.2f dB, top-1 agreement %.4f", f.at("output_sqnr_db"),
                                     f.at("top1_agreement"));
  if (f.count("top1")) absl::StrAppendFormat(&line, ", top1 %.4f (fp32 %.4f)", f.at("top1"), f.at("fp32_top1"));
  if (f.count("psnr_db")) absl::StrAppendFormat(&line, ", PSNR %.2f dB (fp32 %.2f dB)", f.at("psnr_db"), f.at("fp32_psnr_db"));
  if (f.count("miou")) {
    absl::StrAppendFormat(&line, ", mIoU %.4f (fp32 %.4f), foreground IoU %.4f (fp32 %.4f)", f.at("miou"),
                          f.at("fp32_miou"), f.at("foreground_iou"), f.at("fp32_foreground_iou"));
  }
  return run.Log(line, f);
}

}  // namespace qopt
