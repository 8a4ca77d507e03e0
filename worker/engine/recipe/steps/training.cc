#include "recipe/steps/training.h"

#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace qopt {
namespace {

std::string Duration(double seconds) {
  const int64_t s = std::llround(std::max(seconds, 0.0));
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

}  // namespace

std::string AccuracyText(const Figures& f) {
  if (f.count("top1")) {
    std::string text = absl::StrFormat("top-1 %.2f %%", 100 * f.at("top1"));
    if (f.count("fp32_top1")) absl::StrAppendFormat(&text, " (fp32 %.2f %%)", 100 * f.at("fp32_top1"));
    return text;
  }
  if (f.count("psnr_db")) {
    std::string text = absl::StrFormat("PSNR %.2f dB", f.at("psnr_db"));
    if (f.count("fp32_psnr_db")) absl::StrAppendFormat(&text, " (fp32 %.2f dB)", f.at("fp32_psnr_db"));
    return text;
  }
  if (f.count("miou")) {
    std::string text = absl::StrFormat("mIoU %.2f %%", 100 * f.at("miou"));
    if (f.count("fp32_miou")) absl::StrAppendFormat(&text, " (fp32 %.2f %%)", 100 * f.at("fp32_miou"));
    return text;
  }
  if (f.count("top1_agreement")) {
    return absl::StrFormat("top-1 agreement %.4f, output SQNR %.2f dB", f.at("top1_agreement"), f.at("output_sqnr_db"));
  }
  return "not evaluated";
}

TrainCallbacks StepTrainCallbacks(RunContext& run, const std::string& stage, int epochs) {
  TrainCallbacks callbacks;
  auto last_report = std::make_shared<std::chrono::steady_clock::time_point>(std::chrono::steady_clock::now() -
                                                                             std::chrono::seconds(1));
  callbacks.on_iteration = [&run, last_report](const TrainProgress& p) -> absl::Status {
    const auto now = std::chrono::steady_clock::now();
    if (now - *last_report < std::chrono::milliseconds(500) && p.step != p.steps) return run.CheckCancelled();
    *last_report = now;
    const double fraction = (p.epoch - 1 + static_cast<double>(p.step) / p.steps) / p.epochs;
    return run.Progress(fraction, absl::StrFormat("epoch %d/%d step %d/%d: loss %.4f, lr %.3g, %.0f images/s, ETA %s",
                                                  p.epoch, p.epochs, p.step, p.steps, p.loss, p.learning_rate,
                                                  p.images_per_second, Duration(p.eta_seconds)));
  };
  callbacks.on_epoch = [&run, stage, epochs](const EpochRow& r) {
    Figures figures = r.figures;
    figures["epoch"] = r.epoch;
    figures["loss"] = r.loss;
    figures["images_per_second"] = r.images_per_second;
    return run.Log(absl::StrFormat("%s: epoch %d/%d: loss %.4f, %s, %.0f images/s, %s", stage, r.epoch, epochs, r.loss,
                                   AccuracyText(r.figures), r.images_per_second, Duration(r.seconds)),
                   figures);
  };
  callbacks.on_resume = [&run, stage, epochs](const std::vector<EpochRow>& done) {
    return run.Log(absl::StrFormat("%s: resumed from epoch %d of %d (checkpoint)", stage, done.size(), epochs));
  };
  callbacks.on_checkpoint = [&run] { run.CheckpointWritten(); };
  return callbacks;
}

void ReportEpochs(const TrainResult& result, int64_t training_samples, RunContext& run) {
  v1::StepReport& part = run.part();
  v1::Series* loss = part.add_series();
  loss->set_name("training loss");
  v1::Series* top1 = part.add_series();
  top1->set_name("top1");
  for (const EpochRow& r : result.epochs) {
    v1::LayerRow* row = part.add_layers();
    row->set_layer(absl::StrCat("epoch ", r.epoch));
    auto& f = *row->mutable_figures();
    f.insert(r.figures.begin(), r.figures.end());
    f["loss"] = r.loss;
    f["seconds"] = r.seconds;
    f["images_per_second"] = r.images_per_second;
    loss->add_x(r.epoch);
    loss->add_y(r.loss);
    if (r.figures.count("top1")) {
      top1->add_x(r.epoch);
      top1->add_y(r.figures.at("top1"));
    }
  }
  auto& figures = *part.mutable_figures();
  if (!result.epochs.empty()) figures.insert(result.epochs.back().figures.begin(), result.epochs.back().figures.end());
  figures["epochs"] = static_cast<double>(result.epochs.size());
  figures["resumed_epochs"] = result.resumed_epochs;
  figures["training_samples"] = static_cast<double>(training_samples);
  if (!result.epochs.empty()) run.metrics = result.epochs.back().figures;
}

}  // namespace qopt
