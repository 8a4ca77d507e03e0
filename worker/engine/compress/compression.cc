#include "compress/compression.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "ir/shape_inference.h"
#include "status.h"

namespace qopt {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

const char* MetricName(CostMetric metric) { return metric == CostMetric::kMacs ? "macs" : "memory"; }

int64_t TotalCost(const ModelCost& cost, CostMetric metric) {
  return metric == CostMetric::kMacs ? cost.macs : cost.parameters;
}

// The cost of the layer named `name`, or of the pair that replaced it.
int64_t LayerCostOf(const ModelCost& cost, const std::string& name, CostMetric metric) {
  int64_t total = 0;
  for (const LayerCost& l : cost.layers) {
    if (l.layer == name || l.layer == name + ".0" || l.layer == name + ".1") {
      total += metric == CostMetric::kMacs ? l.macs : l.parameters;
    }
  }
  return total;
}

absl::StatusOr<ModelCost> Cost(Graph& g, const CompressionOptions& options) {
  RETURN_IF_ERROR(InferShapes(g, options.input_shapes));
  return CountCost(g);
}

// One method's edits, behind one interface.
class Method {
 public:
  Method(const Graph& original, const CompressionOptions& options, const std::vector<at::Tensor>& inputs)
      : options_(options), pruner_(original, inputs, options.pruning) {}

  std::string SkipReason(const Graph& g, const Node& n) const {
    switch (options_.method) {
      case CompressionMethod::kSpatialSvd:
        return SvdSkipReason(g, n, SvdKind::kSpatial);
      case CompressionMethod::kWeightSvd:
        return SvdSkipReason(g, n, SvdKind::kWeight);
      case CompressionMethod::kChannelPruning:
        return PruningSkipReason(g, n);
    }
    return "";
  }

  /// Compresses `layer` of `g` (shapes inferred) at `ratio`; returns how ("" when the
  /// ratio changes nothing).
  absl::StatusOr<std::string> Apply(Graph& g, const std::string& layer, double ratio, Reconstruction mode) {
    const Node& n = *g.FindNode(layer);
    if (options_.method == CompressionMethod::kChannelPruning) {
      const int64_t channels = g.values[n.Param("weight")].constant->toTensor().size(1);
      const int64_t keep = ChannelsForRatio(channels, ratio, options_.multiplicity);
      if (keep >= channels) return std::string();
      RETURN_IF_ERROR(pruner_.Prune(g, layer, keep, mode));
      return absl::StrCat("keeps ", keep, " of ", channels, " input channels");
    }
    const SvdKind kind = options_.method == CompressionMethod::kSpatialSvd ? SvdKind::kSpatial : SvdKind::kWeight;
    const SvdCost cost = SvdCostOf(g, n, kind, options_.metric);
    const int64_t rank = SvdRankForRatio(cost, ratio, options_.multiplicity);
    if (rank == 0) return std::string();
    RETURN_IF_ERROR(SplitBySvd(g, layer, kind, rank, mode != Reconstruction::kNone, &svds_));
    return absl::StrCat("rank ", rank, " of ", cost.max_rank);
  }

 private:
  const CompressionOptions& options_;
  ChannelPruner pruner_;
  SvdCache svds_;
};

// The model with `ratios` applied in program order on a copy of `original`.
absl::StatusOr<std::unique_ptr<Graph>> ApplyAll(const Graph& original, const std::vector<std::string>& order,
                                                const std::map<std::string, double>& ratios, Method& method,
                                                Reconstruction mode, const CompressionOptions& options,
                                                std::map<std::string, std::string>* how) {
  auto g = std::make_unique<Graph>(original.Clone());
  for (const std::string& layer : order) {
    auto it = ratios.find(layer);
    if (it == ratios.end() || it->second >= 1.0) continue;
    RETURN_IF_ERROR(InferShapes(*g, options.input_shapes));
    absl::StatusOr<std::string> done = method.Apply(*g, layer, it->second, mode);
    if (!done.ok()) return Annotate(done.status(), layer);
    if (how) (*how)[layer] = std::move(*done);
  }
  return g;
}

// Each layer's ratio at score threshold `t`: its most compressed candidate scoring at
// least t, 1 when none does.
std::map<std::string, double> RatiosAt(const EvalDictionary& d, double t, const std::map<std::string, double>& fixed) {
  std::map<std::string, double> ratios = fixed;
  for (const auto& [layer, candidates] : d.layers) {
    double chosen = 1.0;
    for (const Candidate& c : candidates) {
      if (c.score >= t) {
        chosen = c.ratio;
        break;
      }
    }
    ratios[layer] = chosen;
  }
  return ratios;
}

const Candidate* FindCandidate(const EvalDictionary& d, const std::string& layer, double ratio) {
  auto it = d.layers.find(layer);
  if (it == d.layers.end()) return nullptr;
  for (const Candidate& c : it->second) {
    if (std::abs(c.ratio - ratio) < 1e-9) return &c;
  }
  return nullptr;
}

}  // namespace

std::string MethodName(CompressionMethod method) {
  switch (method) {
    case CompressionMethod::kSpatialSvd:
      return "spatial_svd";
    case CompressionMethod::kWeightSvd:
      return "weight_svd";
    case CompressionMethod::kChannelPruning:
      return "channel_pruning";
  }
  return "";
}

std::string EvalDictionaryToJson(const EvalDictionary& d) {
  nlohmann::ordered_json js;
  js["method"] = d.method;
  js["cost_metric"] = d.cost_metric;
  js["score"] = d.score;
  js["eval_samples"] = d.eval_samples;
  js["original_score"] = d.original_score;
  js["original_cost"] = d.original_cost;
  nlohmann::ordered_json layers = nlohmann::ordered_json::object();
  for (const auto& [layer, candidates] : d.layers) {
    nlohmann::ordered_json rows = nlohmann::ordered_json::array();
    for (const Candidate& c : candidates) rows.push_back({{"ratio", c.ratio}, {"score", c.score}, {"cost", c.cost}});
    layers[layer] = std::move(rows);
  }
  js["layers"] = std::move(layers);
  return js.dump(2) + "\n";
}

absl::StatusOr<EvalDictionary> EvalDictionaryFromJson(const std::string& text) {
  const auto js = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto bad = [](const std::string& why) { return absl::InvalidArgumentError(absl::StrCat("eval scores file: ", why)); };
  if (js.is_discarded() || !js.is_object()) return bad("not a JSON object");
  EvalDictionary d;
  for (const char* key : {"method", "cost_metric", "score"}) {
    if (!js.contains(key) || !js[key].is_string()) return bad(absl::StrCat("'", key, "' must be a string"));
  }
  d.method = js["method"];
  d.cost_metric = js["cost_metric"];
  d.score = js["score"];
  if (js.contains("eval_samples") && js["eval_samples"].is_number_integer()) d.eval_samples = js["eval_samples"];
  if (js.contains("original_score") && js["original_score"].is_number()) d.original_score = js["original_score"];
  if (js.contains("original_cost") && js["original_cost"].is_number_integer()) d.original_cost = js["original_cost"];
  if (!js.contains("layers") || !js["layers"].is_object()) return bad("'layers' must be an object");
  for (const auto& [layer, rows] : js["layers"].items()) {
    if (!rows.is_array()) return bad(absl::StrCat("layers.", layer, " must be a list"));
    std::vector<Candidate>& candidates = d.layers[layer];
    for (const auto& row : rows) {
      if (!row.is_object() || !row.contains("ratio") || !row.contains("score") || !row["ratio"].is_number() ||
          !row["score"].is_number()) {
        return bad(absl::StrCat("layers.", layer, ": each candidate needs a numeric ratio and score"));
      }
      Candidate c;
      c.ratio = row["ratio"];
      c.score = row["score"];
      if (row.contains("cost") && row["cost"].is_number_integer()) c.cost = row["cost"];
      if (!(c.ratio > 0 && c.ratio <= 1) || !std::isfinite(c.score)) {
        return bad(absl::StrCat("layers.", layer, ": ratio must be in (0, 1] and score finite"));
      }
      candidates.push_back(c);
    }
    std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) { return a.ratio < b.ratio; });
  }
  return d;
}

absl::StatusOr<CompressionResult> CompressModel(const Graph& graph, const CompressionOptions& options,
                                                const std::vector<at::Tensor>& inputs,
                                                const CompressionCallbacks& callbacks) {
  const auto start = Clock::now();
  const std::string name = MethodName(options.method);
  Graph original = graph.Clone();
  CompressionResult result;
  ASSIGN_OR_RETURN(result.before, Cost(original, options));
  const int64_t original_cost = TotalCost(result.before, options.metric);
  if (original_cost <= 0) {
    return absl::FailedPreconditionError(absl::StrCat("the model has no ", MetricName(options.metric), " to compress"));
  }

  // Which layers can be compressed, and why not the others.
  ASSIGN_OR_RETURN(const std::set<std::string> excluded, original.LayerNames(options.exclude_layers, "exclude_layers"));
  std::vector<std::string> fixed_names;
  for (const auto& [layer, ratio] : options.layer_ratios) fixed_names.push_back(layer);
  RETURN_IF_ERROR(original.LayerNames(fixed_names, "layer_ratios").status());
  Method method(original, options, inputs);
  std::vector<std::string> order, searched;
  for (const Node* n : original.LiveNodes()) {
    if (n->kind != OpKind::kConv && n->kind != OpKind::kLinear) continue;
    LayerOutcome row;
    row.layer = n->name;
    row.skipped = excluded.count(n->name) ? "excluded by the recipe" : method.SkipReason(original, *n);
    row.cost_before = LayerCostOf(result.before, n->name, options.metric);
    if (options.layer_ratios.count(n->name) && !row.skipped.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer_ratios: ", n->name, " cannot be compressed by ", name, ": ", row.skipped));
    }
    order.push_back(n->name);
    if (row.skipped.empty() && options.greedy && !options.layer_ratios.count(n->name)) searched.push_back(n->name);
    result.layers.push_back(std::move(row));
  }
  for (const auto& [layer, ratio] : options.layer_ratios) {
    if (std::find(order.begin(), order.end(), layer) == order.end()) {
      return absl::InvalidArgumentError(absl::StrCat("layer_ratios: ", layer, " is not a convolution or linear layer"));
    }
  }
  const bool any = std::any_of(result.layers.begin(), result.layers.end(),
                               [](const LayerOutcome& r) { return r.skipped.empty(); });
  if (!any) {
    std::vector<std::string> reasons;
    for (const LayerOutcome& r : result.layers) {
      if (reasons.size() < 4) reasons.push_back(absl::StrCat(r.layer, ": ", r.skipped));
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "nothing in the model can be compressed by ", name,
        result.layers.empty() ? " (it has no convolution or linear layer)" : absl::StrCat(" (", absl::StrJoin(reasons, "; "), ")")));
  }

  std::map<std::string, double> ratios = options.layer_ratios;
  if (options.greedy && !searched.empty()) {
    // The eval dictionary: every searched layer alone at every candidate ratio.
    EvalDictionary d;
    d.method = name;
    d.cost_metric = MetricName(options.metric);
    d.score = callbacks.score_name;
    d.eval_samples = callbacks.eval_samples;
    d.original_cost = original_cost;
    const bool reuse = options.saved && options.saved->method == name && options.saved->cost_metric == d.cost_metric &&
                       options.saved->score == d.score;
    if (options.saved && !reuse) {
      RETURN_IF_ERROR(callbacks.log(absl::StrCat(
          name, ": the saved eval scores are for ", options.saved->method, " by ", options.saved->score, " on ",
          options.saved->cost_metric, ", not ", name, " by ", d.score, " on ", d.cost_metric, "; evaluating afresh")));
    }
    auto t0 = Clock::now();
    if (reuse && options.saved->original_score != 0) {
      d.original_score = options.saved->original_score;
    } else {
      ASSIGN_OR_RETURN(d.original_score, callbacks.score(original));
    }
    result.eval_seconds += Since(t0);
    const int n = options.num_candidates;
    for (size_t i = 0; i < searched.size(); ++i) {
      const std::string& layer = searched[i];
      for (int k = 1; k < n; ++k) {
        const double ratio = static_cast<double>(k) / n;
        RETURN_IF_ERROR(callbacks.progress(
            (i + static_cast<double>(k - 1) / (n - 1)) / searched.size(),
            absl::StrFormat("eval dictionary: layer %d/%d %s, ratio %.2f", i + 1, searched.size(), layer, ratio)));
        const Candidate* saved = reuse ? FindCandidate(*options.saved, layer, ratio) : nullptr;
        if (saved != nullptr) {
          d.layers[layer].push_back(*saved);
          ++result.reused;
          continue;
        }
        Graph candidate = original.Clone();
        const absl::StatusOr<std::string> how = method.Apply(candidate, layer, ratio, Reconstruction::kAlone);
        if (!how.ok()) return Annotate(how.status(), layer);
        Candidate c{ratio, d.original_score, original_cost};
        if (!how->empty()) {
          ASSIGN_OR_RETURN(const ModelCost cost, Cost(candidate, options));
          c.cost = TotalCost(cost, options.metric);
          t0 = Clock::now();
          ASSIGN_OR_RETURN(c.score, callbacks.score(candidate));
          result.eval_seconds += Since(t0);
          if (!std::isfinite(c.score)) {
            return absl::FailedPreconditionError(absl::StrFormat(
                "%s at ratio %.2f scored %g: the evaluation gives no finite %s", layer, ratio, c.score, d.score));
          }
          ++result.evaluations;
        }
        d.layers[layer].push_back(c);
      }
    }
    RETURN_IF_ERROR(callbacks.progress(1.0, "choosing ratios"));

    // Binary search over the distinct scores: the highest threshold whose model meets
    // the target (lower thresholds compress more, so the cost falls as they do).
    const double target = options.target_ratio * static_cast<double>(original_cost) * (1 + 1e-9);
    std::vector<double> thresholds = {std::numeric_limits<double>::infinity()};
    for (const auto& [layer, candidates] : d.layers) {
      for (const Candidate& c : candidates) thresholds.push_back(c.score);
    }
    std::sort(thresholds.begin(), thresholds.end(), std::greater<double>());
    thresholds.erase(std::unique(thresholds.begin(), thresholds.end()), thresholds.end());
    // The model's cost with `chosen` ratios, from shapes alone (no SVD, no refit).
    auto cost_of = [&](const std::map<std::string, double>& chosen) -> absl::StatusOr<int64_t> {
      ASSIGN_OR_RETURN(auto g, ApplyAll(original, order, chosen, method, Reconstruction::kNone, options, nullptr));
      ASSIGN_OR_RETURN(const ModelCost cost, Cost(*g, options));
      return TotalCost(cost, options.metric);
    };
    auto cost_at = [&](double t) { return cost_of(RatiosAt(d, t, options.layer_ratios)); };
    ASSIGN_OR_RETURN(const int64_t lowest, cost_at(thresholds.back()));
    if (lowest > target) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "target_ratio %.4g cannot be reached by %s: every layer at its most compressed candidate gives %.4f "
          "(raise target_ratio, add candidates, or combine methods)",
          options.target_ratio, name, static_cast<double>(lowest) / original_cost));
    }
    size_t lo = 0, hi = thresholds.size() - 1;  // answer in [lo, hi]; hi meets the target
    while (lo < hi) {
      const size_t mid = (lo + hi) / 2;
      ASSIGN_OR_RETURN(const int64_t c, cost_at(thresholds[mid]));
      if (c <= target) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    result.threshold = thresholds[hi];
    ratios = RatiosAt(d, result.threshold, options.layer_ratios);
    if (hi > 0) {
      // Scores tie (accuracy on a thousand images moves in steps of 0.1 %), so one step of
      // the threshold can move many layers at once and overshoot the target. From the
      // threshold above, which misses it, take that step's moves one layer at a time,
      // best-scoring first, and stop as soon as the target is met.
      std::map<std::string, double> partial = RatiosAt(d, thresholds[hi - 1], options.layer_ratios);
      std::vector<std::pair<double, std::string>> moves;
      for (const auto& [layer, ratio] : ratios) {
        if (ratio < partial.at(layer)) moves.emplace_back(FindCandidate(d, layer, ratio)->score, layer);
      }
      std::sort(moves.begin(), moves.end(), [](const auto& a, const auto& b) {
        return a.first != b.first ? a.first > b.first : a.second < b.second;
      });
      for (size_t k = 0; k + 1 < moves.size(); ++k) {
        partial[moves[k].second] = ratios.at(moves[k].second);
        ASSIGN_OR_RETURN(const int64_t cost, cost_of(partial));
        if (cost <= target) {
          ratios = partial;
          break;
        }
      }
    }
    result.dictionary = std::move(d);
  }
  result.search_seconds = Since(start);

  // The chosen ratios, applied in order, each layer refitted against the original model.
  std::map<std::string, std::string> how;
  ASSIGN_OR_RETURN(result.graph, ApplyAll(original, order, ratios, method, Reconstruction::kInSequence, options, &how));
  ASSIGN_OR_RETURN(result.after, Cost(*result.graph, options));
  for (LayerOutcome& row : result.layers) {
    auto it = how.find(row.layer);
    if (it != how.end() && !it->second.empty()) {
      row.ratio = ratios.at(row.layer);
      row.how = it->second;
    }
    row.cost_after = LayerCostOf(result.after, row.layer, options.metric);
  }
  return result;
}

}  // namespace qopt
