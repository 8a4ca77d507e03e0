// analyze: where the calibrated simulation loses accuracy, layer by layer (scores with
// quantizer groups switched, output errors, ranges, histograms), into the report and one
// JSON artifact per analysis.
#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "analysis/quant_analyzer.h"
#include "recipe/steps/run_context.h"
#include "status.h"
#include "steps/step_spec.h"

namespace qopt {
namespace {

using json = nlohmann::ordered_json;

// Sets figure `key` unless it was not measured.
void Put(google::protobuf::Map<std::string, double>& figures, const std::string& key, double value) {
  if (!std::isnan(value)) figures[key] = value;
}

json Number(double v) { return std::isnan(v) ? json(nullptr) : json(v); }

json HistogramJson(const ValueHistogram& h) {
  return {{"lo", h.lo}, {"hi", h.hi}, {"counts", h.counts}, {"below", h.below}, {"above", h.above}};
}

void AddSeries(v1::StepReport& part, const std::string& name, const std::vector<double>& x, const std::vector<double>& y) {
  v1::Series* s = part.add_series();
  s->set_name(name);
  s->mutable_x()->Add(x.begin(), x.end());
  s->mutable_y()->Add(y.begin(), y.end());
}

void AddHistogram(v1::StepReport& part, const std::string& name, const ValueHistogram& h) {
  if (h.counts.empty()) return;
  const double width = (h.hi - h.lo) / static_cast<double>(h.counts.size());
  std::vector<double> x, y;
  for (size_t b = 0; b < h.counts.size(); ++b) {
    x.push_back(h.lo + (b + 0.5) * width);
    y.push_back(static_cast<double>(h.counts[b]));
  }
  AddSeries(part, name, x, y);
}

std::string Quantizers(const QuantSim& sim, const QuantizerGroup& g) {
  std::vector<std::string> names;
  for (int vid : g.params) {
    const std::string& full = sim.graph().values[vid].name;
    names.push_back(full.substr(full.rfind('.') + 1));
  }
  if (!g.activations.empty()) names.push_back(g.layer == "input" ? "input" : "output");
  return absl::StrJoin(names, ",");
}

// One group's row of the report, as streamed and as kept.
v1::LayerRow AnalysisRow(const QuantSim& sim, const LayerAnalysis& l) {
  v1::LayerRow row;
  row.set_layer(l.group.layer);
  (*row.mutable_labels())["op_type"] = l.group.op_type;
  (*row.mutable_labels())["quantizers"] = Quantizers(sim, l.group);
  auto& f = *row.mutable_figures();
  Put(f, "only_enabled", l.only_enabled);
  Put(f, "only_disabled", l.only_disabled);
  Put(f, "output_mse", l.output_mse);
  Put(f, "output_sqnr_db", l.output_sqnr_db);
  Put(f, "activation_min", l.activation_min);
  Put(f, "activation_max", l.activation_max);
  Put(f, "encoding_min", l.encoding_min);
  Put(f, "encoding_max", l.encoding_max);
  if (!l.weight_min.empty()) {
    f["weight_min"] = *std::min_element(l.weight_min.begin(), l.weight_min.end());
    f["weight_max"] = *std::max_element(l.weight_max.begin(), l.weight_max.end());
  }
  return row;
}

}  // namespace

absl::Status RunAnalyzeStep(const v1::Step& step, RunContext& run) {
  const v1::AnalyzeStep& a = step.analyze();
  ASSIGN_OR_RETURN(const std::vector<Batch>* data, run.Evaluation());
  AnalysisOptions options;
  options.num_batches = static_cast<size_t>(a.num_batches());
  options.metric = run.metric();
  options.per_layer = a.per_layer();
  options.activation_samples = a.activation_samples();
  options.histogram_bins = a.histogram_bins();
  AnalysisCallbacks callbacks;
  callbacks.progress = [&](double fraction, const std::string& message) { return run.Progress(fraction, message); };
  callbacks.on_layer = [&](const LayerAnalysis& l) {
    std::string line = absl::StrFormat("analyze: %s (%s)", l.group.layer, l.group.op_type);
    if (!std::isnan(l.only_enabled)) {
      absl::StrAppendFormat(&line, ": only it quantized %.4f, only it in float %.4f", l.only_enabled, l.only_disabled);
    }
    if (!std::isnan(l.output_sqnr_db)) absl::StrAppendFormat(&line, ", output SQNR %.1f dB", l.output_sqnr_db);
    return run.LogRow(line, AnalysisRow(*run.sim, l));
  };
  ASSIGN_OR_RETURN(const QuantAnalysis r, AnalyzeQuantization(*run.sim, *data, options, callbacks));

  // The report.
  v1::StepReport& part = run.part();
  auto& figures = *part.mutable_figures();
  Put(figures, "fp32", r.fp32);
  figures["quantized"] = r.quantized;
  figures["weights_only"] = r.weights_only;
  figures["activations_only"] = r.activations_only;
  figures["eval_samples"] = static_cast<double>(r.eval_samples);
  figures["activation_samples"] = static_cast<double>(r.activation_samples);
  figures["evaluations"] = r.evaluations;
  figures["eval_seconds"] = r.eval_seconds;
  figures["seconds_per_evaluation"] = r.seconds_per_evaluation;
  figures["groups"] = static_cast<double>(r.layers.size());
  json scores_layers = json::object(), errors = json::object(), ranges = json::object(), histograms = json::object();
  for (const LayerAnalysis& l : r.layers) {
    const std::string& name = l.group.layer;
    *part.add_layers() = AnalysisRow(*run.sim, l);
    if (!l.weight_min.empty()) {
      std::vector<double> channels;
      for (size_t c = 0; c < l.weight_min.size(); ++c) channels.push_back(static_cast<double>(c));
      AddSeries(part, name + " weight min per channel", channels, l.weight_min);
      AddSeries(part, name + " weight max per channel", channels, l.weight_max);
    }
    AddHistogram(part, name + " weight histogram", l.weights);
    AddHistogram(part, name + " output histogram", l.activations);

    scores_layers[name] = {{"op_type", l.group.op_type}, {"only_enabled", Number(l.only_enabled)},
                           {"only_disabled", Number(l.only_disabled)}};
    errors[name] = {{"output_mse", Number(l.output_mse)}, {"output_sqnr_db", Number(l.output_sqnr_db)}};
    ranges[name] = {{"weight_min_per_channel", l.weight_min}, {"weight_max_per_channel", l.weight_max},
                    {"activation_min", Number(l.activation_min)}, {"activation_max", Number(l.activation_max)},
                    {"encoding_min", Number(l.encoding_min)}, {"encoding_max", Number(l.encoding_max)}};
    json h = json::object();
    if (!l.weights.counts.empty()) h["weights"] = HistogramJson(l.weights);
    if (!l.activations.counts.empty()) h["outputs"] = HistogramJson(l.activations);
    histograms[name] = std::move(h);
  }
  RETURN_IF_ERROR(SetDetails({{"score", r.score}, {"histogram_bins", a.histogram_bins()}}, &part));

  // One artifact per analysis.
  const json scores = {{"score", r.score},
                       {"eval_samples", r.eval_samples},
                       {"fp32", Number(r.fp32)},
                       {"quantized", r.quantized},
                       {"weights_only", r.weights_only},
                       {"activations_only", r.activations_only},
                       {"layers", std::move(scores_layers)}};
  const std::pair<const char*, json> files[] = {
      {"scores", scores},
      {"layer_errors", {{"activation_samples", r.activation_samples}, {"layers", std::move(errors)}}},
      {"ranges", {{"activation_samples", r.activation_samples}, {"layers", std::move(ranges)}}},
      {"histograms", {{"bins", a.histogram_bins()}, {"layers", std::move(histograms)}}}};
  for (const auto& [analysis, content] : files) {
    RETURN_IF_ERROR(run.WriteArtifact(AnalyzeArtifactName(a, analysis), content.dump(1) + "\n"));
  }

  std::string line = absl::StrFormat("analyze: %s quantized %.4f, weights only %.4f, activations only %.4f",
                                     r.score, r.quantized, r.weights_only, r.activations_only);
  if (!std::isnan(r.fp32)) absl::StrAppendFormat(&line, " (fp32 %.4f)", r.fp32);
  absl::StrAppendFormat(&line, "; %d groups, %d evaluations, %.1f s each", static_cast<int>(r.layers.size()),
                        r.evaluations, r.seconds_per_evaluation);
  Figures summary = {{"quantized", r.quantized}, {"weights_only", r.weights_only},
                     {"activations_only", r.activations_only}};
  return run.Log(line, summary);
}

}  // namespace qopt
