#include "analysis/mixed_precision.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "analysis/sim_scorer.h"
#include "status.h"

namespace qopt {
namespace {

// Ops an activation passes through unchanged in precision on its way to a layer's input:
// those that move data (reshape, transpose, ...; a ViT's attention output reaches its
// projection through both) and those that clip it.
bool KeepsPrecision(const Node& n) {
  if (n.kind == OpKind::kIf || n.kind == OpKind::kLoop) return false;
  return n.kind == OpKind::kRelu || n.kind == OpKind::kClip || n.kind == OpKind::kMaxPool || IsDataMovement(n);
}

constexpr int kFloatBits = 32;

int InputBits(const QuantSim& sim, int vid) {
  const Graph& g = sim.graph();
  for (int hops = 0; hops < 16 && vid >= 0; ++hops) {
    auto q = sim.activation_quantizers().find(vid);
    if (q != sim.activation_quantizers().end() && q->second.enabled()) return q->second.spec().bitwidth;
    const int producer = g.values[vid].producer;
    if (producer < 0) return kFloatBits;
    const Node& n = g.nodes[producer];
    if (!KeepsPrecision(n) || n.inputs.empty()) return kFloatBits;
    vid = n.inputs[0];
  }
  return kFloatBits;
}

// The quantizers of a group the search sets: its layer's weight (not the bias) and its
// activations, those switched on.
struct GroupQuantizers {
  std::vector<int> weights, activations;
};

GroupQuantizers QuantizersOf(const QuantSim& sim, const QuantizerGroup& group) {
  GroupQuantizers q;
  const Node* layer = sim.graph().FindNode(group.layer);
  for (int vid : group.params) {
    if (layer != nullptr && layer->Param("weight") == vid && sim.param_quantizers().at(vid).enabled()) {
      q.weights.push_back(vid);
    }
  }
  for (int vid : group.activations) {
    if (sim.activation_quantizers().at(vid).enabled()) q.activations.push_back(vid);
  }
  return q;
}

// What candidate `c` changes for a group: (weight bits, activation bits), 0 where the
// group has no such quantizer.
std::pair<int, int> Effect(const GroupQuantizers& q, const BitCandidate& c) {
  return {q.weights.empty() ? 0 : c.param_bits, q.activations.empty() ? 0 : c.activation_bits};
}

absl::Status SetBits(QuantSim& sim, int vid, bool param, int bits) {
  const Quantizer& q = param ? sim.param_quantizers().at(vid) : sim.activation_quantizers().at(vid);
  if (q.spec().bitwidth == bits) return absl::OkStatus();
  QuantizerChange change;
  change.bitwidth = bits;
  return Annotate(sim.ChangeQuantizer(vid, change), sim.graph().values[vid].name);
}

absl::Status SetGroup(QuantSim& sim, const GroupQuantizers& q, const BitCandidate& c) {
  for (int vid : q.weights) RETURN_IF_ERROR(SetBits(sim, vid, true, c.param_bits));
  for (int vid : q.activations) RETURN_IF_ERROR(SetBits(sim, vid, false, c.activation_bits));
  return absl::OkStatus();
}

}  // namespace

std::string BitCandidate::Name() const { return absl::StrCat("W", param_bits, "A", activation_bits); }

double BitOps(const QuantSim& sim, const std::map<std::string, int64_t>& macs) {
  double total = 0.0;
  for (const Node* n : sim.graph().LiveNodes()) {
    if ((n->kind != OpKind::kConv && n->kind != OpKind::kLinear) || n->inputs.empty()) continue;
    auto it = macs.find(n->name);
    if (it == macs.end() || it->second == 0) continue;
    int weight_bits = kFloatBits;
    auto w = sim.param_quantizers().find(n->Param("weight"));
    if (w != sim.param_quantizers().end() && w->second.enabled()) weight_bits = w->second.spec().bitwidth;
    total += static_cast<double>(it->second) * weight_bits * InputBits(sim, n->inputs[0]);
  }
  return total;
}

std::string ConfigKey(const std::vector<BitCandidate>& candidates, const std::vector<int>& choice) {
  std::vector<std::string> names;
  for (int c : choice) names.push_back(candidates[c].Name());
  return absl::StrJoin(names, ",");
}

absl::StatusOr<MixedPrecisionResult> ChooseMixedPrecision(QuantSim& sim, const std::vector<Batch>& batches,
                                                          const MixedPrecisionOptions& options,
                                                          const MixedPrecisionCache& cache,
                                                          const MixedPrecisionCallbacks& callbacks) {
  const std::vector<BitCandidate>& cands = options.candidates;
  if (cands.size() < 2) return absl::InvalidArgumentError("mixed precision needs two or more candidates");
  for (const BitCandidate& c : cands) {
    if (c.activation_bits < 2 || c.activation_bits > 16 || c.param_bits < 2 || c.param_bits > 16) {
      return absl::InvalidArgumentError(absl::StrCat("candidate ", c.Name(), ": bitwidths must be in 2..16"));
    }
  }
  if (!(options.allowed_drop > 0)) return absl::InvalidArgumentError("allowed_drop must be > 0");
  if (options.curve_points < 0 || options.curve_points > 64) {
    return absl::InvalidArgumentError("curve_points must be in 0..64");
  }
  for (const auto& [vid, q] : sim.activation_quantizers()) {
    if (q.enabled() && !q.has_encodings()) {
      return absl::FailedPreconditionError("mixed precision needs a calibrated simulation: calibrate first");
    }
  }
  auto progress = [&](double fraction, const std::string& message) {
    return callbacks.progress ? callbacks.progress(fraction, message) : absl::OkStatus();
  };

  MixedPrecisionResult r;
  r.candidates = cands;
  for (int c = 1; c < static_cast<int>(cands.size()); ++c) {
    const BitCandidate &a = cands[c], &b = cands[r.largest];
    const int ab = a.activation_bits * a.param_bits, bb = b.activation_bits * b.param_bits;
    if (ab > bb || (ab == bb && (a.param_bits > b.param_bits))) r.largest = c;
  }
  const BitCandidate& largest = cands[r.largest];
  r.reference_bitops = BitOps(sim, options.macs);
  if (r.reference_bitops <= 0) {
    return absl::FailedPreconditionError("the model has no conv or linear layer with multiply-accumulates to count");
  }
  auto relative = [&] { return BitOps(sim, options.macs) / r.reference_bitops; };

  ASSIGN_OR_RETURN(SimScorer scorer, SimScorer::Create(sim, batches, options.num_batches, options.metric));
  r.score = scorer.name();
  r.fp32 = scorer.fp32();
  r.samples = scorer.samples();

  r.groups = QuantizerGroups(sim);
  std::vector<GroupQuantizers> quantizers;
  for (const QuantizerGroup& g : r.groups) quantizers.push_back(QuantizersOf(sim, g));
  // Phase 1's entries: per group the candidates that change it, each effect once.
  std::vector<std::vector<int>> tried(r.groups.size());
  int phase1_total = 0;
  for (size_t g = 0; g < r.groups.size(); ++g) {
    std::set<std::pair<int, int>> effects = {Effect(quantizers[g], largest)};
    for (int c = 0; c < static_cast<int>(cands.size()); ++c) {
      if (effects.insert(Effect(quantizers[g], cands[c])).second) tried[g].push_back(c);
    }
    phase1_total += static_cast<int>(tried[g].size());
  }
  const int budget = 1 + phase1_total + static_cast<int>(std::ceil(std::log2(phase1_total + 1.0))) + options.curve_points;

  MixedPrecisionCache known = cache;
  int done = 0;  // scores so far, measured or cached
  // The score of the sim as it is now: cached under `cached` when it is there.
  auto score = [&](const double* cached, const std::string& what) -> absl::StatusOr<double> {
    RETURN_IF_ERROR(progress(static_cast<double>(done) / budget,
                             absl::StrCat("evaluation ", done + 1, "/~", budget, ": ", what)));
    ++done;
    if (cached != nullptr) {
      ++r.cached;
      return *cached;
    }
    return scorer.Score();
  };
  auto find = [](const auto& map, const auto& key) -> const double* {
    auto it = map.find(key);
    return it == map.end() ? nullptr : &it->second;
  };
  auto saved = [&]() { return callbacks.on_score ? callbacks.on_score(known) : absl::OkStatus(); };

  // Every group at the largest candidate.
  std::vector<int> choice(r.groups.size(), r.largest);
  for (size_t g = 0; g < r.groups.size(); ++g) RETURN_IF_ERROR(SetGroup(sim, quantizers[g], largest));
  const std::string largest_key = ConfigKey(cands, choice);
  ASSIGN_OR_RETURN(r.largest_score, score(find(known.configs, largest_key), "every group at " + largest.Name()));
  if (known.configs.emplace(largest_key, r.largest_score).second) RETURN_IF_ERROR(saved());
  r.largest_relative_bitops = relative();
  r.target = (scorer.labelled() ? r.fp32 : r.largest_score) - options.allowed_drop;
  std::map<int, ParetoPoint> points;  // by entries lowered
  points[0] = ParetoPoint{0, r.largest_relative_bitops, r.largest_score, r.largest_score >= r.target};
  if (callbacks.on_point) RETURN_IF_ERROR(callbacks.on_point(points[0]));
  r.choice = choice;
  r.chosen_score = r.largest_score;
  r.chosen_relative_bitops = r.largest_relative_bitops;
  r.met_target = points[0].meets_target;

  if (r.met_target) {
    // Phase 1.
    for (size_t g = 0; g < r.groups.size(); ++g) {
      for (int c : tried[g]) {
        RETURN_IF_ERROR(SetGroup(sim, quantizers[g], cands[c]));
        const std::pair<std::string, std::string> key{r.groups[g].layer, cands[c].Name()};
        ASSIGN_OR_RETURN(const double s, score(find(known.phase1, key), r.groups[g].layer + " at " + cands[c].Name()));
        r.phase1.push_back(GroupScore{static_cast<int>(g), c, s, relative()});
        if (known.phase1.emplace(key, s).second) RETURN_IF_ERROR(saved());
      }
      RETURN_IF_ERROR(SetGroup(sim, quantizers[g], largest));
      if (callbacks.on_group) RETURN_IF_ERROR(callbacks.on_group(r, static_cast<int>(g)));
    }

    // Phase 2's order: best score first; a group's entry counts only when it lowers the
    // group's bit-ops below those of its entries before it.
    std::vector<int> sorted(r.phase1.size());
    for (size_t i = 0; i < sorted.size(); ++i) sorted[i] = static_cast<int>(i);
    std::stable_sort(sorted.begin(), sorted.end(), [&](int a, int b) {
      const GroupScore &x = r.phase1[a], &y = r.phase1[b];
      if (x.score != y.score) return x.score > y.score;
      return x.relative_bitops < y.relative_bitops;
    });
    std::vector<double> lowest(r.groups.size(), r.largest_relative_bitops);
    for (int i : sorted) {
      const GroupScore& e = r.phase1[i];
      if (e.relative_bitops >= lowest[e.group]) continue;
      lowest[e.group] = e.relative_bitops;
      r.order.push_back(i);
    }
    const int length = static_cast<int>(r.order.size());
    auto config = [&](int lowered) {
      std::vector<int> c(r.groups.size(), r.largest);
      for (int i = 0; i < lowered; ++i) c[r.phase1[r.order[i]].group] = r.phase1[r.order[i]].candidate;
      return c;
    };
    auto evaluate = [&](int lowered) -> absl::StatusOr<ParetoPoint> {
      if (auto it = points.find(lowered); it != points.end()) return it->second;
      const std::vector<int> c = config(lowered);
      for (size_t g = 0; g < r.groups.size(); ++g) RETURN_IF_ERROR(SetGroup(sim, quantizers[g], cands[c[g]]));
      const std::string key = ConfigKey(cands, c);
      ASSIGN_OR_RETURN(const double s, score(find(known.configs, key),
                                             absl::StrCat(lowered, " of ", length, " groups lowered")));
      if (known.configs.emplace(key, s).second) RETURN_IF_ERROR(saved());
      const ParetoPoint p{lowered, relative(), s, s >= r.target};
      points[lowered] = p;
      if (callbacks.on_point) RETURN_IF_ERROR(callbacks.on_point(p));
      return p;
    };
    // The longest prefix that meets the target, assuming scores fall as groups are lowered.
    int lo = 0, hi = length;
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      ASSIGN_OR_RETURN(const ParetoPoint p, evaluate(mid));
      if (p.meets_target) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    for (int j = 1; j <= options.curve_points && length > 0; ++j) {
      RETURN_IF_ERROR(evaluate(static_cast<int>(std::lround(static_cast<double>(j) * length / options.curve_points)))
                          .status());
    }
    // The fewest bit-ops among the configurations that met it (the curve points may find
    // one past where the binary search stopped).
    const ParetoPoint* best = &points.at(0);
    for (const auto& [lowered, p] : points) {
      if (p.meets_target && p.relative_bitops < best->relative_bitops) best = &p;
    }
    r.choice = config(best->lowered);
    r.chosen_score = best->score;
    r.chosen_relative_bitops = best->relative_bitops;
    for (size_t g = 0; g < r.groups.size(); ++g) RETURN_IF_ERROR(SetGroup(sim, quantizers[g], cands[r.choice[g]]));
  }
  for (const auto& [lowered, p] : points) r.pareto.push_back(p);
  std::stable_sort(r.pareto.begin(), r.pareto.end(),
                   [](const ParetoPoint& a, const ParetoPoint& b) { return a.relative_bitops > b.relative_bitops; });
  r.evaluations = scorer.evaluations();
  r.eval_seconds = scorer.seconds();
  RETURN_IF_ERROR(progress(1.0, "mixed precision chosen"));
  return r;
}

}  // namespace qopt
