#include "passes/output_channels.h"

#include <algorithm>
#include <set>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "passes/pass_util.h"
#include "status.h"

namespace qopt {
namespace internal_channels {

enum class Edit { kOutputs, kDepthwise, kInputs, kBatchNorm, kClip };

struct PlannedEdit {
  int node;
  Edit edit;
  std::vector<int64_t> keep;
};

// Channels of a value that are kept, along dim 1 (or the last dim once `features_last`).
struct Reach {
  int value;
  std::vector<int64_t> keep;
  bool features_last;
};

class Planner {
 public:
  explicit Planner(const Graph& g) : g_(g) {}

  absl::StatusOr<std::vector<PlannedEdit>> Plan(const Node& layer, const std::vector<int64_t>& keep) {
    edits_.push_back({layer.id, Edit::kOutputs, keep});
    std::vector<Reach> work = {{layer.outputs[0], keep, layer.kind == OpKind::kLinear}};
    while (!work.empty()) {
      const Reach r = std::move(work.back());
      work.pop_back();
      touched_.insert(r.value);
      if (g_.IsReturned(r.value)) {
        return absl::FailedPreconditionError(absl::StrCat(g_.values[r.value].name, " is a model output: its channels cannot change"));
      }
      std::set<int> seen;
      for (int c : g_.values[r.value].consumers) {
        if (g_.nodes[c].removed || !seen.insert(c).second) continue;
        RETURN_IF_ERROR(Follow(g_.nodes[c], r, work));
      }
    }
    return edits_;
  }

  const std::set<int>& touched() const { return touched_; }

 private:
  absl::Status Follow(const Node& n, const Reach& r, std::vector<Reach>& work) {
    auto blocked = [&](const std::string& why) {
      return absl::FailedPreconditionError(absl::StrCat("cannot remove channels of ", g_.values[r.value].name,
                                                        " through ", n.name, " (", n.op, "): ", why));
    };
    if (std::count(n.inputs.begin(), n.inputs.end(), r.value) != 1 || n.inputs[0] != r.value) {
      return blocked("it reads them other than as its data input (a merge with another branch)");
    }
    switch (n.kind) {
      case OpKind::kBatchNorm:
        edits_.push_back({n.id, Edit::kBatchNorm, r.keep});
        break;
      case OpKind::kClip: {
        const int hi = n.Param("clip_max");
        if (hi >= 0 && g_.values[hi].constant->toTensor().numel() > 1) edits_.push_back({n.id, Edit::kClip, r.keep});
        break;
      }
      case OpKind::kRelu:
      case OpKind::kDropout:
      case OpKind::kMaxPool:
      case OpKind::kAvgPool:
      case OpKind::kAdaptiveAvgPool:
        break;
      case OpKind::kConv:
        if (n.Param("weight") < 0 || r.features_last) return blocked("not a layer with constant weights");
        if (IsDepthwiseConv(g_, n)) {
          edits_.push_back({n.id, Edit::kDepthwise, r.keep});
          break;
        }
        if (ConvGroups(g_, n) != 1) return blocked("a grouped convolution");
        edits_.push_back({n.id, Edit::kInputs, r.keep});
        return absl::OkStatus();
      case OpKind::kLinear: {
        const auto& shape = g_.values[r.value].shape;
        if (n.Param("weight") < 0 || !(r.features_last || (shape && shape->size() == 2))) {
          return blocked("the channels are not its input features");
        }
        edits_.push_back({n.id, Edit::kInputs, r.keep});
        return absl::OkStatus();
      }
      case OpKind::kFlatten:
        return Flatten(n, r, work, blocked);
      default:
        return blocked("channels cannot pass through this op");
    }
    work.push_back({n.outputs[0], r.keep, r.features_last});
    return absl::OkStatus();
  }

  // flatten(x, 1, -1) of [N, C, spatial...]: channel c becomes features c·S .. c·S + S - 1.
  template <typename Blocked>
  absl::Status Flatten(const Node& n, const Reach& r, std::vector<Reach>& work, Blocked blocked) {
    const auto& shape = g_.values[r.value].shape;
    const auto start = n.inputs.size() > 1 ? g_.values[n.inputs[1]].constant : std::nullopt;
    const auto end = n.inputs.size() > 2 ? g_.values[n.inputs[2]].constant : std::nullopt;
    if (n.op != "aten::flatten" || !shape || shape->size() < 2 || !start || !end || start->toInt() != 1 ||
        (end->toInt() != -1 && end->toInt() != static_cast<int64_t>(shape->size()) - 1)) {
      return blocked("only flatten(x, 1) of a tensor with known shape");
    }
    int64_t spatial = 1;
    for (size_t d = 2; d < shape->size(); ++d) spatial *= (*shape)[d];
    std::vector<int64_t> features;
    for (int64_t c : r.keep) {
      for (int64_t j = 0; j < spatial; ++j) features.push_back(c * spatial + j);
    }
    work.push_back({n.outputs[0], std::move(features), true});
    return absl::OkStatus();
  }

  const Graph& g_;
  std::vector<PlannedEdit> edits_;
  std::set<int> touched_;
};

at::Tensor Slice(const at::Tensor& t, int64_t dim, const std::vector<int64_t>& keep) {
  return t.index_select(dim, at::tensor(keep, at::kLong).to(t.device())).contiguous();
}

void SliceParam(Graph& g, Node& n, const char* role, int64_t dim, const std::vector<int64_t>& keep) {
  const int id = n.Param(role);
  if (id < 0) return;
  const auto it = std::find(n.inputs.begin(), n.inputs.end(), id);
  const int slot = it == n.inputs.end() ? -1 : static_cast<int>(it - n.inputs.begin());
  g.SetParam(n, role, slot, Slice(g.values[id].constant->toTensor(), dim, keep));
}

void SetGroups(Graph& g, Node& n, int64_t groups) {
  const int slot = ConvGroupsSlot(n);
  const int old = n.inputs[slot];
  auto& consumers = g.values[old].consumers;
  consumers.erase(std::find(consumers.begin(), consumers.end(), n.id));
  const int id = g.AddConstant(c10::IValue(groups));
  g.values[id].consumers.push_back(n.id);
  n.inputs[slot] = id;
}

void Apply(Graph& g, const PlannedEdit& e) {
  Node& n = g.nodes[e.node];
  switch (e.edit) {
    case Edit::kDepthwise:
      SetGroups(g, n, static_cast<int64_t>(e.keep.size()));
      [[fallthrough]];
    case Edit::kOutputs:
      SliceParam(g, n, "weight", 0, e.keep);
      SliceParam(g, n, "bias", 0, e.keep);
      if (auto it = g.bn_stats.find(n.id); it != g.bn_stats.end()) {
        it->second.mean = Slice(it->second.mean, 0, e.keep);
        it->second.std = Slice(it->second.std, 0, e.keep);
      }
      break;
    case Edit::kInputs:
      SliceParam(g, n, "weight", 1, e.keep);
      break;
    case Edit::kBatchNorm:
      for (const char* role : {"weight", "bias", "running_mean", "running_var"}) SliceParam(g, n, role, 0, e.keep);
      break;
    case Edit::kClip:
      for (const char* role : {"clip_min", "clip_max"}) {
        const int id = n.Param(role);
        if (id >= 0 && g.values[id].constant->toTensor().numel() > 1) SliceParam(g, n, role, 0, e.keep);
      }
      break;
  }
}

}  // namespace internal_channels

absl::Status KeepOutputChannels(Graph& graph, Node& layer, const std::vector<int64_t>& keep) {
  using namespace internal_channels;
  if ((layer.kind != OpKind::kConv && layer.kind != OpKind::kLinear) || layer.Param("weight") < 0) {
    return absl::InvalidArgumentError(absl::StrCat(layer.name, " is not a conv or linear layer with weights"));
  }
  const int64_t channels = graph.values[layer.Param("weight")].constant->toTensor().size(0);
  if (keep.empty() || !std::is_sorted(keep.begin(), keep.end()) ||
      std::adjacent_find(keep.begin(), keep.end()) != keep.end() || keep.front() < 0 || keep.back() >= channels) {
    return absl::InvalidArgumentError(absl::StrCat(layer.name, ": channels to keep must be distinct, ascending, in 0..",
                                                   channels - 1));
  }
  if (IsDepthwiseConv(graph, layer)) {
    return absl::InvalidArgumentError(absl::StrCat(layer.name, " is depthwise: its channels are its input's"));
  }
  Planner planner(graph);
  ASSIGN_OR_RETURN(const std::vector<PlannedEdit> edits, planner.Plan(layer, keep));
  for (const PlannedEdit& e : edits) Apply(graph, e);
  for (int v : planner.touched()) graph.values[v].shape.reset();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int>> ChannelReaders(const Graph& graph, const Node& layer) {
  using namespace internal_channels;
  Planner planner(graph);
  ASSIGN_OR_RETURN(const std::vector<PlannedEdit> edits, planner.Plan(layer, {0}));
  std::vector<int> readers;
  for (const PlannedEdit& e : edits) {
    if (e.edit == Edit::kInputs) readers.push_back(e.node);
  }
  return readers;
}

}  // namespace qopt
