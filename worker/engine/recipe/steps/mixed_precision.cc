// mixed_precision: a bitwidth candidate per quantizer group for the lowest bit-ops within
// the allowed drop; the simulation is left at the chosen mix, which also goes out as a
// quantsim config that reproduces it. Scores are kept in the job's checkpoint, so a
// cancelled job resumes the search where it stopped.
#include <algorithm>
#include <chrono>
#include <cmath>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "analysis/mixed_precision.h"
#include "ir/cost_model.h"
#include "ir/shape_inference.h"
#include "quant/quantsim_config.h"
#include "recipe/steps/run_context.h"
#include "status.h"
#include "steps/step_spec.h"
#include "train/checkpoint.h"

namespace qopt {
namespace {

using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

constexpr char kCacheKey[] = "mixed_precision";

nlohmann::json CacheJson(const MixedPrecisionCache& cache) {
  nlohmann::json phase1 = nlohmann::json::array(), configs = nlohmann::json::object();
  for (const auto& [key, score] : cache.phase1) phase1.push_back({{"layer", key.first}, {"candidate", key.second}, {"score", score}});
  for (const auto& [key, score] : cache.configs) configs[key] = score;
  return {{"phase1", std::move(phase1)}, {"configs", std::move(configs)}};
}

// The scores of an interrupted run of this step; none when the checkpoint is not its own.
// The checkpoint is untrusted like any file a job wrote: a malformed cache is an error.
absl::StatusOr<MixedPrecisionCache> ReadCache(const RunContext& run) {
  MixedPrecisionCache cache;
  if (run.checkpoint_path().empty()) return cache;
  absl::StatusOr<nlohmann::json> read = ReadCheckpointMeta(run.checkpoint_path());
  if (!read.ok()) return cache;  // none, or not a checkpoint: the search starts afresh
  const nlohmann::json& meta = *read;
  if (!meta.is_object() || meta.value("fingerprint", "") != run.StepFingerprint() || !meta.contains(kCacheKey)) {
    return cache;
  }
  try {
    const nlohmann::json& c = meta.at(kCacheKey);
    for (const auto& e : c.at("phase1")) {
      cache.phase1[{e.at("layer").get<std::string>(), e.at("candidate").get<std::string>()}] = e.at("score").get<double>();
    }
    for (const auto& [key, score] : c.at("configs").items()) cache.configs[key] = score.get<double>();
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("the checkpoint's mixed precision scores are malformed: ", e.what()));
  }
  return cache;
}

// The recipe's quantsim config with every group's choice set per layer, so a later job
// with this config builds the same mix whatever its recipe's bitwidths.
QuantSimConfig ChosenConfig(const QuantSim& sim, const MixedPrecisionResult& r) {
  QuantSimConfig config = sim.options().config;
  for (size_t g = 0; g < r.groups.size(); ++g) {
    const BitCandidate& c = r.candidates[r.choice[g]];
    const QuantizerGroup& group = r.groups[g];
    const Node* layer = sim.graph().FindNode(group.layer);
    for (int vid : group.params) {
      if (layer != nullptr && layer->Param("weight") == vid) config.layers[group.layer].params["weight"].bitwidth = c.param_bits;
    }
    for (int vid : group.activations) {
      const ActivationSite& site = sim.activation_sites().at(vid);
      if (site.is_input) {
        config.model_input_bitwidth = c.activation_bits;
      } else {
        config.layers[site.layer].bitwidth = c.activation_bits;
      }
    }
  }
  return config;
}

void AddFigure(v1::LayerRow& row, const std::string& key, double value) { (*row.mutable_figures())[key] = value; }

}  // namespace

absl::Status RunMixedPrecisionStep(const v1::Step& step, RunContext& run) {
  const v1::MixedPrecisionStep& m = step.mixed_precision();
  ASSIGN_OR_RETURN(const std::vector<Batch>* data, run.Batches(m.data(), "mixed_precision's choice of bitwidths"));
  MixedPrecisionOptions options;
  for (const v1::BitwidthCandidate& c : m.candidates()) options.candidates.push_back({c.activation_bits(), c.param_bits()});
  // Candidates the config's supported_kernels do not list would build a mix the target
  // cannot run.
  if (run.sim) {
    const std::vector<SupportedKernel>& kernels = run.sim->options().config.supported_kernels;
    for (const BitCandidate& c : options.candidates) {
      const bool listed = kernels.empty() || std::any_of(kernels.begin(), kernels.end(), [&](const SupportedKernel& k) {
                            return k.Runs(c.activation_bits, c.param_bits);
                          });
      if (!listed) {
        return absl::InvalidArgumentError(absl::StrCat("mixed_precision: candidate ", c.Name(),
                                                       " is not among the quantsim config's supported_kernels"));
      }
    }
  }
  options.allowed_drop = m.allowed_drop();
  options.metric = run.metric();
  options.num_batches = static_cast<size_t>(m.num_batches());
  options.curve_points = m.curve_points();
  {
    ASSIGN_OR_RETURN(const std::vector<int64_t> shape, run.InputShape());
    RETURN_IF_ERROR(Annotate(InferShapes(*run.graph, {shape}), "mixed_precision: counting MACs"));
    ASSIGN_OR_RETURN(const ModelCost cost, CountCost(*run.graph));
    for (const LayerCost& layer : cost.layers) options.macs[layer.layer] = layer.macs;
  }

  ASSIGN_OR_RETURN(const MixedPrecisionCache cache, ReadCache(run));
  // Scores go into the checkpoint every two seconds and when the search ends, however it
  // ends, unless the checkpoint holds a later step's.
  const bool keep_scores = !run.checkpoint_path().empty() && !run.CheckpointOfLaterStep();
  Clock::time_point last_write = Clock::now();
  MixedPrecisionCache latest = cache;
  auto write_scores = [&]() -> absl::Status {
    Checkpoint c;
    c.meta["fingerprint"] = run.StepFingerprint();
    c.meta[kCacheKey] = CacheJson(latest);
    RETURN_IF_ERROR(WriteCheckpoint(run.checkpoint_path(), c));
    run.CheckpointWritten();
    last_write = Clock::now();
    return absl::OkStatus();
  };

  MixedPrecisionCallbacks callbacks;
  callbacks.progress = [&](double fraction, const std::string& message) { return run.Progress(fraction, message); };
  callbacks.on_score = [&](const MixedPrecisionCache& known) -> absl::Status {
    latest = known;
    if (!keep_scores || Clock::now() - last_write < std::chrono::seconds(2)) return absl::OkStatus();
    return write_scores();
  };
  callbacks.on_group = [&](const MixedPrecisionResult& r, int g) {
    const QuantizerGroup& group = r.groups[g];
    std::string line = absl::StrFormat("mixed_precision: %s (%s):", group.layer, group.op_type);
    v1::LayerRow row;
    row.set_layer(group.layer);
    (*row.mutable_labels())["op_type"] = group.op_type;
    for (const GroupScore& e : r.phase1) {
      if (e.group != g) continue;
      const std::string name = r.candidates[e.candidate].Name();
      absl::StrAppendFormat(&line, " %s %.4f (bit-ops %.3f)", name, e.score, e.relative_bitops);
      AddFigure(row, "score_" + name, e.score);
      AddFigure(row, "bitops_" + name, e.relative_bitops);
    }
    return run.LogRow(line, row);
  };
  callbacks.on_point = [&](const ParetoPoint& p) {
    return run.Log(absl::StrFormat("mixed_precision: %d entries lowered: bit-ops %.3f of the start, score %.4f: %s",
                                   p.lowered, p.relative_bitops, p.score, p.meets_target ? "meets the target" : "misses the target"),
                   {{"relative_bitops", p.relative_bitops}, {"score", p.score}});
  };
  absl::StatusOr<MixedPrecisionResult> search = ChooseMixedPrecision(*run.sim, *data, options, cache, callbacks);
  // Cancelled or failed, the scores so far are kept for the next run all the same.
  if (keep_scores) RETURN_IF_ERROR(write_scores());
  if (!search.ok()) return search.status();
  const MixedPrecisionResult& r = *search;

  // The report: headline figures, a row per group (its phase-1 scores and its choice),
  // the pareto curve.
  v1::StepReport& part = run.part();
  auto& figures = *part.mutable_figures();
  if (!std::isnan(r.fp32)) figures["fp32"] = r.fp32;
  figures["allowed_drop"] = m.allowed_drop();
  figures["target"] = r.target;
  figures["largest_score"] = r.largest_score;
  figures["largest_relative_bitops"] = r.largest_relative_bitops;
  figures["chosen_score"] = r.chosen_score;
  figures["chosen_relative_bitops"] = r.chosen_relative_bitops;
  figures["met_target"] = r.met_target ? 1 : 0;
  figures["groups"] = static_cast<double>(r.groups.size());
  int lowered = 0;
  for (int c : r.choice) lowered += c != r.largest ? 1 : 0;
  figures["lowered_groups"] = lowered;
  figures["evaluations"] = r.evaluations;
  figures["cached_evaluations"] = r.cached;
  figures["eval_seconds"] = r.eval_seconds;
  figures["seconds_per_evaluation"] = r.evaluations > 0 ? r.eval_seconds / r.evaluations : 0.0;
  figures["eval_samples"] = static_cast<double>(r.samples);

  json groups = json::array(), chosen = json::object();
  for (size_t g = 0; g < r.groups.size(); ++g) {
    const QuantizerGroup& group = r.groups[g];
    const BitCandidate& c = r.candidates[r.choice[g]];
    v1::LayerRow* row = part.add_layers();
    row->set_layer(group.layer);
    (*row->mutable_labels())["op_type"] = group.op_type;
    (*row->mutable_labels())["chosen"] = c.Name();
    json phase1 = json::object();
    for (const GroupScore& e : r.phase1) {
      if (e.group != static_cast<int>(g)) continue;
      const std::string name = r.candidates[e.candidate].Name();
      AddFigure(*row, "score_" + name, e.score);
      AddFigure(*row, "bitops_" + name, e.relative_bitops);
      phase1[name] = {{"score", e.score}, {"relative_bitops", e.relative_bitops}};
    }
    chosen[group.layer] = c.Name();
    groups.push_back({{"layer", group.layer}, {"op_type", group.op_type}, {"chosen", c.Name()},
                      {"param_bits", c.param_bits}, {"activation_bits", c.activation_bits}, {"phase1", std::move(phase1)}});
  }
  json order = json::array();
  for (int i : r.order) {
    const GroupScore& e = r.phase1[i];
    order.push_back({{"layer", r.groups[e.group].layer}, {"candidate", r.candidates[e.candidate].Name()}, {"score", e.score}});
  }
  json pareto = json::array();
  v1::Series* curve = part.add_series();
  curve->set_name("pareto");
  for (auto it = r.pareto.rbegin(); it != r.pareto.rend(); ++it) {  // fewest bit-ops first
    curve->add_x(it->relative_bitops);
    curve->add_y(it->score);
  }
  for (const ParetoPoint& p : r.pareto) {
    pareto.push_back({{"relative_bitops", p.relative_bitops}, {"score", p.score}, {"lowered", p.lowered},
                      {"meets_target", p.meets_target}});
  }
  json candidates = json::array();
  for (const BitCandidate& c : r.candidates) candidates.push_back(c.Name());
  RETURN_IF_ERROR(SetDetails({{"score", r.score},
                              {"candidates", candidates},
                              {"largest", r.candidates[r.largest].Name()},
                              {"chosen", chosen},
                              {"pareto", pareto}},
                             &part));

  const json results = {{"score", r.score},
                        {"allowed_drop", m.allowed_drop()},
                        {"fp32", std::isnan(r.fp32) ? json(nullptr) : json(r.fp32)},
                        {"target", r.target},
                        {"candidates", candidates},
                        {"largest", r.candidates[r.largest].Name()},
                        {"largest_score", r.largest_score},
                        {"largest_relative_bitops", r.largest_relative_bitops},
                        {"chosen_score", r.chosen_score},
                        {"chosen_relative_bitops", r.chosen_relative_bitops},
                        {"met_target", r.met_target},
                        {"evaluations", r.evaluations},
                        {"cached_evaluations", r.cached},
                        {"eval_seconds", r.eval_seconds},
                        {"eval_samples", r.samples},
                        {"groups", std::move(groups)},
                        {"order", std::move(order)},
                        {"pareto", std::move(pareto)}};
  RETURN_IF_ERROR(run.WriteArtifact(MixedPrecisionResultsName(m), results.dump(1) + "\n"));
  RETURN_IF_ERROR(run.WriteArtifact(MixedPrecisionConfigName(m), QuantSimConfigToJson(ChosenConfig(*run.sim, r))));

  std::string line = absl::StrFormat("mixed_precision: %d of %d groups lowered, bit-ops %.3f of the start, %s %.4f",
                                     lowered, static_cast<int>(r.groups.size()), r.chosen_relative_bitops, r.score,
                                     r.chosen_score);
  if (!std::isnan(r.fp32)) absl::StrAppendFormat(&line, " (fp32 %.4f)", r.fp32);
  absl::StrAppendFormat(&line, ", target %.4f; %d evaluations (%d cached), %.1f s", r.target, r.evaluations, r.cached,
                        r.eval_seconds);
  if (!r.met_target) {
    absl::StrAppendFormat(&line, "; even %s everywhere misses the target, so it is kept",
                          r.candidates[r.largest].Name());
  }
  return run.Log(line, {{"chosen_relative_bitops", r.chosen_relative_bitops}, {"chosen_score", r.chosen_score}});
}

}  // namespace qopt
