#include "recipe/steps/compression.h"

#include <algorithm>
#include <filesystem>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "eval/evaluate.h"
#include "file_text.h"
#include "ir/interpreter.h"
#include "status.h"

namespace qopt {
namespace {

constexpr int64_t kMaxScoresFileBytes = 64 << 20;
// Identical outputs have infinite SQNR; scores are capped here so they stay numbers.
constexpr double kMaxSqnrDb = 200.0;

absl::StatusOr<EvalDictionary> ReadSavedScores(const std::string& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("ratios.eval_scores_path: cannot read ", path));
  if (size > static_cast<uintmax_t>(kMaxScoresFileBytes)) {
    return absl::InvalidArgumentError("ratios.eval_scores_path: the file is larger than 64 MiB");
  }
  ASSIGN_OR_RETURN(const std::string text, ReadTextFile(path));
  auto d = EvalDictionaryFromJson(text);
  if (!d.ok()) return Annotate(d.status(), "ratios.eval_scores_path");
  return d;
}

// The figure candidates are scored by: the task's (top-1, PSNR or mIoU) with labels, else
// agreement with the uncompressed model's top-1 for classifiers, else its output SQNR.
absl::StatusOr<std::string> ScoreName(const std::vector<Batch>& eval, const std::vector<at::Tensor>& reference,
                                      TaskMetric metric) {
  if (!reference.empty() && std::all_of(eval.begin(), eval.begin() + reference.size(),
                                        [](const Batch& b) { return b.labels.has_value(); })) {
    ASSIGN_OR_RETURN(const std::optional<TaskMetric> task,
                     ResolveTaskMetric(metric, reference.front(), *eval.front().labels));
    if (task) return std::string(TaskFigureName(*task));
  }
  return std::string(!reference.empty() && reference.front().dim() == 2 ? "top1_agreement" : "output_sqnr_db");
}

// One row per convolution and linear layer: what it became, or why it stayed.
void ReportLayers(const CompressionResult& result, v1::StepReport& part) {
  for (const LayerOutcome& l : result.layers) {
    v1::LayerRow* row = part.add_layers();
    row->set_layer(l.layer);
    auto& labels = *row->mutable_labels();
    if (!l.how.empty()) labels["compressed"] = l.how;
    if (!l.skipped.empty()) labels["skipped"] = l.skipped;
    auto& f = *row->mutable_figures();
    f["ratio"] = l.ratio;
    f["cost_before"] = static_cast<double>(l.cost_before);
    f["cost_after"] = static_cast<double>(l.cost_after);
  }
}

}  // namespace

absl::Status RunCompression(const v1::CompressionRatios& r, CompressionOptions options, RunContext& run) {
  const std::string name = MethodName(options.method);
  options.metric = r.cost_metric() == "memory" ? CostMetric::kMemory : CostMetric::kMacs;
  options.target_ratio = r.target_ratio();
  options.num_candidates = r.num_candidates();
  options.greedy = r.selection() == "greedy";
  options.layer_ratios.insert(r.layer_ratios().begin(), r.layer_ratios().end());
  options.exclude_layers.assign(r.exclude_layers().begin(), r.exclude_layers().end());
  if (!r.eval_scores_path().empty()) {
    ASSIGN_OR_RETURN(options.saved, ReadSavedScores(r.eval_scores_path()));
  }
  ASSIGN_OR_RETURN(const std::vector<int64_t> shape, run.InputShape());
  options.input_shapes = {shape};

  // The uncompressed model's outputs on the scoring batches, computed once.
  absl::StatusOr<const std::vector<Batch>*> scoring =
      run.Batches(r.data(), absl::StrCat(name, "'s choice of layer ratios"));
  if (!scoring.ok()) return Annotate(scoring.status(), "ratios.data");
  const std::vector<Batch>* score_batches = *scoring;
  const size_t n = Limit(r.eval_batches(), score_batches->size());
  std::vector<at::Tensor> reference;
  {
    Interpreter original(*run.graph);
    for (size_t b = 0; b < n; ++b) {
      ASSIGN_OR_RETURN(at::Tensor out, original.Forward((*score_batches)[b].inputs));
      reference.push_back(std::move(out));
    }
  }
  CompressionCallbacks callbacks;
  ASSIGN_OR_RETURN(callbacks.score_name, ScoreName(*score_batches, reference, run.metric()));
  for (size_t b = 0; b < n; ++b) callbacks.eval_samples += (*score_batches)[b].inputs.size(0);
  callbacks.score = [&](const Graph& candidate) -> absl::StatusOr<double> {
    Interpreter model(candidate);
    ASSIGN_OR_RETURN(const Figures f, EvaluateModel([&](const at::Tensor& x) { return model.Forward(x); },
                                                    *score_batches, n, &reference, run.metric()));
    return std::min(f.at(callbacks.score_name), kMaxSqnrDb);
  };
  callbacks.progress = [&](double fraction, const std::string& message) { return run.Progress(fraction, message); };
  callbacks.log = [&](const std::string& line) { return run.Log(line); };
  if (options.greedy) {
    RETURN_IF_ERROR(run.Log(absl::StrFormat("%s: scoring candidates by %s on %d samples of the %s data", name,
                                            callbacks.score_name, callbacks.eval_samples,
                                            r.has_data() ? "ratios'" : "evaluation")));
  }

  std::vector<at::Tensor> inputs;
  if (options.method == CompressionMethod::kChannelPruning) {
    ASSIGN_OR_RETURN(inputs, run.CalibrationInputs(0));
  }
  ASSIGN_OR_RETURN(CompressionResult result, CompressModel(*run.graph, options, inputs, callbacks));

  // Accuracy of the model before and after, on all the evaluation data the recipe gives.
  ASSIGN_OR_RETURN(const std::vector<Batch>* eval, run.Evaluation());
  auto figures_of = [&](const Graph& g, const char* what) -> absl::StatusOr<Figures> {
    Interpreter model(g);
    return EvaluateModel([&](const at::Tensor& x) { return model.Forward(x); }, *eval, eval->size(), nullptr, run.metric(),
                         [&](size_t done, size_t total) {
                           return run.Progress(1.0, absl::StrFormat("evaluating the %s model, batch %d/%d", what, done, total));
                         });
  };
  ASSIGN_OR_RETURN(const Figures before, figures_of(*run.graph, "uncompressed"));
  ASSIGN_OR_RETURN(const Figures after, figures_of(*result.graph, "compressed"));

  v1::StepReport& part = run.part();
  auto& f = *part.mutable_figures();
  f["macs_before"] = static_cast<double>(result.before.macs);
  f["macs_after"] = static_cast<double>(result.after.macs);
  f["params_before"] = static_cast<double>(result.before.parameters);
  f["params_after"] = static_cast<double>(result.after.parameters);
  const double achieved = options.metric == CostMetric::kMacs
                              ? static_cast<double>(result.after.macs) / result.before.macs
                              : static_cast<double>(result.after.parameters) / result.before.parameters;
  f["target_ratio"] = options.target_ratio;
  f["achieved_ratio"] = achieved;
  int compressed = 0, skipped = 0;
  for (const LayerOutcome& l : result.layers) {
    compressed += !l.how.empty();
    skipped += !l.skipped.empty();
  }
  f["layers_compressed"] = compressed;
  f["layers_skipped"] = skipped;
  for (const char* figure : {"top1", "psnr_db", "miou"}) {
    if (!before.count(figure) || !after.count(figure)) continue;
    f[absl::StrCat("original_", figure)] = before.at(figure);
    f[figure] = after.at(figure);
  }
  if (result.dictionary) {
    f["score_threshold"] = result.threshold;
    f["evaluations"] = result.evaluations;
    f["reused_evaluations"] = result.reused;
    f["search_seconds"] = result.search_seconds;
    f["eval_seconds"] = result.eval_seconds;
    f["eval_samples"] = static_cast<double>(callbacks.eval_samples);
  }
  ReportLayers(result, part);
  nlohmann::ordered_json details;
  details["cost_metric"] = r.cost_metric();
  details["selection"] = r.selection();
  if (result.dictionary) {
    const std::string artifact = name + "_eval_scores.json";
    const std::string text = EvalDictionaryToJson(*result.dictionary);
    RETURN_IF_ERROR(run.WriteArtifact(artifact, text));
    details["eval_dictionary"] = nlohmann::ordered_json::parse(text);
  }
  RETURN_IF_ERROR(SetDetails(details, &part));

  std::string line = absl::StrFormat("%s: %d layers compressed, %d skipped; MACs %.4g -> %.4g M, parameters %.4g -> %.4g M",
                                     name, compressed, skipped, result.before.macs / 1e6, result.after.macs / 1e6,
                                     result.before.parameters / 1e6, result.after.parameters / 1e6);
  if (before.count("top1")) {
    absl::StrAppendFormat(&line, "; top-1 %.2f %% -> %.2f %%", 100 * before.at("top1"), 100 * after.at("top1"));
  } else if (before.count("psnr_db")) {
    absl::StrAppendFormat(&line, "; PSNR %.2f dB -> %.2f dB", before.at("psnr_db"), after.at("psnr_db"));
  } else if (before.count("miou")) {
    absl::StrAppendFormat(&line, "; mIoU %.2f %% -> %.2f %%", 100 * before.at("miou"), 100 * after.at("miou"));
  }
  if (result.dictionary) {
    absl::StrAppendFormat(&line, "; search %.1f s (%d candidates scored, %d reused, %.0f %% of it scoring)",
                          result.search_seconds, result.evaluations, result.reused,
                          100 * result.eval_seconds / std::max(result.search_seconds, 1e-9));
  }
  Figures logged(f.begin(), f.end());
  // The simulation (if any) refers to the old graph; compression comes before calibrate.
  run.sim.reset();
  run.graph = std::move(result.graph);
  return run.Log(line, logged);
}

}  // namespace qopt
