#include "compress/channel_pruning.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <optional>
#include <set>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ir/interpreter.h"
#include "passes/output_channels.h"
#include "passes/pass_util.h"
#include "status.h"

namespace qopt {
namespace {

// Ops that pass channels through one by one, as passes/output_channels.h follows them.
bool PassesChannels(const Graph& g, const Node& n) {
  switch (n.kind) {
    case OpKind::kBatchNorm:
    case OpKind::kRelu:
    case OpKind::kClip:
    case OpKind::kDropout:
    case OpKind::kMaxPool:
    case OpKind::kAvgPool:
    case OpKind::kAdaptiveAvgPool:
      return true;
    default:
      return IsDepthwiseConv(g, n);
  }
}

// The conv / linear layer whose output channels are `layer`'s input channels, or the
// reason there is none.
absl::StatusOr<const Node*> ChannelSource(const Graph& g, const Node& layer) {
  int v = layer.inputs[0];
  while (true) {
    const int p = g.values[v].producer;
    if (p < 0) return absl::FailedPreconditionError("its input is the model's input");
    const Node& n = g.nodes[p];
    if ((n.kind == OpKind::kConv || n.kind == OpKind::kLinear) && n.Param("weight") >= 0 && !IsDepthwiseConv(g, n)) {
      return &n;
    }
    if (!PassesChannels(g, n)) {
      return absl::FailedPreconditionError(
          absl::StrCat("its input channels come from ", n.name, " (", n.op, "), not from one layer"));
    }
    v = n.inputs[0];
  }
}

// What Prune needs of `layer` without recorded shapes.
std::string StructuralReason(const Graph& g, const Node& layer) {
  if (layer.kind == OpKind::kLinear) return "a linear layer (channel pruning prunes convolutions)";
  if (layer.kind != OpKind::kConv) return "not a convolution";
  if (layer.Param("weight") < 0) return "its weight is not a constant of the model";
  const at::Tensor& w = g.values[layer.Param("weight")].constant->toTensor();
  if (w.dim() != 4) return "not a 2-D convolution";
  if (ConvGroups(g, layer) != 1) return "a grouped or depthwise convolution";
  if (!ConvIntPair(g, layer, 3) || !ConvIntPair(g, layer, 4) || !ConvIntPair(g, layer, 5)) {
    return "its stride, padding or dilation is not a constant pair";
  }
  if (w.size(1) < 2) return "it has one input channel";
  auto source = ChannelSource(g, layer);
  if (!source.ok()) return std::string(source.status().message());
  return "";
}

// Keeps the ids of some values of a run and stops once it has all of them.
class Captures : public ValueObserver {
 public:
  explicit Captures(std::vector<int> ids) : ids_(std::move(ids)), seen_(ids_.size()) {}
  void OnValue(const Value& value, c10::IValue& v) override {
    for (size_t k = 0; k < ids_.size(); ++k) {
      if (ids_[k] == value.id && v.isTensor()) seen_[k] = v.toTensor();
    }
  }
  bool Finished() const override {
    return std::all_of(seen_.begin(), seen_.end(), [](const at::Tensor& t) { return t.defined(); });
  }
  std::vector<at::Tensor> Take() { return std::exchange(seen_, std::vector<at::Tensor>(ids_.size())); }

 private:
  std::vector<int> ids_;
  std::vector<at::Tensor> seen_;
};

}  // namespace

struct ChannelPruner::Normal {
  at::Tensor gram;   // X^T X, (K, K) float64: K = input channels × kernel elements
  at::Tensor cross;  // X^T (Y - bias), (K, out channels) float64
  int64_t samples = 0;
};

std::string PruningSkipReason(const Graph& graph, const Node& layer) {
  std::string why = StructuralReason(graph, layer);
  if (!why.empty()) return why;
  const Node* source = *ChannelSource(graph, layer);
  auto readers = ChannelReaders(graph, *source);
  if (!readers.ok()) return absl::StrCat("the channels of ", source->name, " cannot change: ", readers.status().message());
  std::vector<std::string> others;
  for (int r : *readers) {
    if (r != layer.id) others.push_back(graph.nodes[r].name);
  }
  if (!others.empty()) {
    return absl::StrCat("the channels of ", source->name, " also feed ", absl::StrJoin(others, ", "));
  }
  if (!graph.values[layer.inputs[0]].shape || !graph.values[layer.outputs[0]].shape) {
    return "not reached by the example run (its shapes are unknown)";
  }
  return "";
}

int64_t ChannelsForRatio(int64_t channels, double ratio, int64_t multiplicity) {
  const int64_t mult = std::max<int64_t>(multiplicity, 1);
  int64_t keep = std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(channels) * ratio + 1e-9));
  keep = (keep + mult - 1) / mult * mult;
  return std::min(keep, channels);
}

ChannelPruner::ChannelPruner(const Graph& original, const std::vector<at::Tensor>& inputs,
                             ChannelPruningOptions options)
    : original_(original), inputs_(inputs), options_(options) {}

// Sums X^T X and X^T Y over sampled output positions of `layer`: X the im2col rows of its
// input in `inputs_from`, Y the original model's output there minus the bias. The
// positions depend only on the layer and the seed, so every graph samples the same ones.
absl::StatusOr<ChannelPruner::Normal> ChannelPruner::Sample(const Graph& inputs_from, const Node& layer) {
  const Node& target = *original_.FindNode(layer.name);
  const at::Tensor& w = inputs_from.values[layer.Param("weight")].constant->toTensor();
  const std::vector<int64_t> kernel = {w.size(2), w.size(3)};
  const auto stride = *ConvIntPair(inputs_from, layer, 3), padding = *ConvIntPair(inputs_from, layer, 4);
  const auto dilation = *ConvIntPair(inputs_from, layer, 5);
  const int bias_id = target.Param("bias");
  const at::Tensor bias =
      bias_id >= 0 ? original_.values[bias_id].constant->toTensor().to(at::kDouble) : at::Tensor();

  int64_t images = 0;
  for (const at::Tensor& x : inputs_) images += x.size(0);
  const int64_t wanted_images =
      std::min<int64_t>(images, (options_.num_samples + options_.samples_per_image - 1) / options_.samples_per_image);
  const int64_t per_image =
      std::max<int64_t>(1, (options_.num_samples + wanted_images - 1) / std::max<int64_t>(wanted_images, 1));

  Interpreter original_run(original_);
  std::optional<Interpreter> pruned_run;
  if (&inputs_from != &original_) pruned_run.emplace(inputs_from);
  at::Generator gen = at::detail::createCPUGenerator(options_.seed ^ std::hash<std::string>{}(layer.name));
  Normal normal;
  int64_t used = 0;
  for (const at::Tensor& batch : inputs_) {
    if (used >= wanted_images) break;
    const at::Tensor xb = batch.slice(0, 0, std::min<int64_t>(batch.size(0), wanted_images - used));
    used += xb.size(0);
    at::Tensor x, y;
    if (pruned_run) {
      Captures out({target.outputs[0]}), in({layer.inputs[0]});
      RETURN_IF_ERROR(original_run.Run({xb}, &out).status());
      RETURN_IF_ERROR(pruned_run->Run({xb}, &in).status());
      y = out.Take()[0];
      x = in.Take()[0];
    } else {
      Captures both({target.inputs[0], target.outputs[0]});
      RETURN_IF_ERROR(original_run.Run({xb}, &both).status());
      auto seen = both.Take();
      x = seen[0], y = seen[1];
    }
    if (!x.defined() || !y.defined()) {
      return absl::InternalError(absl::StrCat(layer.name, ": the run did not reach the layer"));
    }
    const int64_t n = x.size(0), m = y.size(1);
    const at::Tensor cols = at::im2col(x, kernel, dilation, padding, stride);  // (N, K, P)
    const int64_t positions = cols.size(2);
    if (positions != y.size(2) * y.size(3)) {
      return absl::InternalError(absl::StrCat(layer.name, ": im2col positions do not match the output"));
    }
    const int64_t s = std::min(per_image, positions);
    const at::Tensor idx = at::randint(positions, {n, 1, s}, gen, at::TensorOptions().dtype(at::kLong)).to(x.device());
    const at::Tensor xs = cols.gather(2, idx.expand({n, cols.size(1), s})).permute({0, 2, 1}).reshape({n * s, -1});
    at::Tensor ys = y.reshape({n, m, positions}).gather(2, idx.expand({n, m, s})).permute({0, 2, 1}).reshape({n * s, m});
    const at::Tensor xd = xs.to(at::kDouble), yd = ys.to(at::kDouble);
    const at::Tensor target_y = bias.defined() ? yd - bias.to(yd.device()) : yd;
    const at::Tensor gram = xd.t().mm(xd), cross = xd.t().mm(target_y);
    normal.gram = normal.gram.defined() ? normal.gram + gram : gram;
    normal.cross = normal.cross.defined() ? normal.cross + cross : cross;
    normal.samples += n * s;
  }
  if (normal.samples == 0) return absl::FailedPreconditionError("no data to sample the layer's inputs from");
  return normal;
}

absl::Status ChannelPruner::Prune(Graph& graph, const std::string& name, int64_t keep_count, Reconstruction mode) {
  Node* layer = graph.FindNode(name);
  if (layer == nullptr) return absl::InvalidArgumentError(absl::StrCat("no layer named '", name, "'"));
  if (const std::string why = StructuralReason(graph, *layer); !why.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(name, " cannot be pruned: ", why));
  }
  if (mode != Reconstruction::kNone && original_.FindNode(name) == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(name, " is not a layer of the original model"));
  }
  const at::Tensor weight = graph.values[layer->Param("weight")].constant->toTensor();
  const int64_t channels = weight.size(1), kernel = weight.size(2) * weight.size(3);
  if (keep_count < 1 || keep_count > channels) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": keeping ", keep_count, " of ", channels, " input channels"));
  }
  // The channels with the largest sum of squared weights, in their order.
  const at::Tensor importance = weight.to(at::kDouble).pow(2).sum({0, 2, 3}).cpu();
  const at::Tensor top = std::get<0>(std::get<1>(importance.topk(keep_count)).sort());
  const std::vector<int64_t> keep(top.data_ptr<int64_t>(), top.data_ptr<int64_t>() + keep_count);
  // The input channels this graph's layer has index the original's only while none were
  // pruned; kAlone requires that.
  if (mode == Reconstruction::kAlone) {
    const Node& orig = *original_.FindNode(name);
    if (original_.values[orig.Param("weight")].constant->toTensor().size(1) != channels) {
      return absl::InvalidArgumentError(absl::StrCat(name, " was pruned before: reconstruct it in sequence"));
    }
  }
  ASSIGN_OR_RETURN(const Node* source_c, ChannelSource(graph, *layer));
  Node& source = graph.nodes[source_c->id];
  RETURN_IF_ERROR(KeepOutputChannels(graph, source, keep));
  if (mode == Reconstruction::kNone) return absl::OkStatus();

  Normal normal;
  if (mode == Reconstruction::kAlone) {
    if (cached_layer_ != name) {
      ASSIGN_OR_RETURN(Normal full, Sample(original_, *original_.FindNode(name)));
      cached_ = std::make_shared<Normal>(std::move(full));
      cached_layer_ = name;
    }
    // Rows of the kept channels: im2col orders a row's elements channel by channel.
    std::vector<int64_t> rows;
    for (int64_t c : keep) {
      for (int64_t j = 0; j < kernel; ++j) rows.push_back(c * kernel + j);
    }
    const at::Tensor r = at::tensor(rows, at::kLong).to(cached_->gram.device());
    normal.gram = cached_->gram.index_select(0, r).index_select(1, r);
    normal.cross = cached_->cross.index_select(0, r);
    normal.samples = cached_->samples;
  } else {
    ASSIGN_OR_RETURN(normal, Sample(graph, *graph.FindNode(name)));
  }
  samples_ = normal.samples;
  // Ridge-regularized normal equations: a tiny multiple of the mean diagonal keeps
  // channels that are always zero (after a ReLU) from making them singular.
  const int64_t k = normal.gram.size(0);
  const at::Tensor gram = normal.gram.cpu(), cross = normal.cross.cpu();
  const double ridge = 1e-6 * gram.diagonal().mean().item<double>() + 1e-12;
  const at::Tensor solved = at::linalg_solve(gram + ridge * at::eye(k, gram.options()), cross);  // (K', m)
  Node& pruned = *graph.FindNode(name);
  const at::Tensor refit = solved.t().reshape({weight.size(0), keep_count, weight.size(2), weight.size(3)});
  graph.SetParam(pruned, "weight", 1, refit.to(weight.options()).contiguous());
  return absl::OkStatus();
}

}  // namespace qopt
