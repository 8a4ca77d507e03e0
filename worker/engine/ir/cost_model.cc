#include "ir/cost_model.h"

#include <functional>
#include <numeric>

#include <c10/core/ScalarType.h>

#include "absl/strings/str_cat.h"

namespace qopt {
namespace internal_cost {

int64_t Elements(const std::vector<int64_t>& shape) {
  return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<int64_t>());
}

const std::vector<int64_t>* ShapeOf(const Graph& g, int vid) {
  const auto& s = g.values[vid].shape;
  return s ? &*s : nullptr;
}

// Output elements times the length of the reduced dimension: the last of the first
// operand for linear layers and matrix products.
int64_t MatrixMacs(const Graph& g, const Node& n) {
  const auto* a = ShapeOf(g, n.inputs[n.op == "aten::addmm" ? 1 : 0]);
  const auto* y = ShapeOf(g, n.outputs[0]);
  if (!a || !y || a->empty()) return 0;
  return Elements(*y) * a->back();
}

int64_t ConvMacs(const Graph& g, const Node& n) {
  const auto* w = ShapeOf(g, n.inputs[1]);
  const auto* y = ShapeOf(g, n.outputs[0]);
  if (!w || !y || w->size() < 2) return 0;
  // weight: [out, in / groups, k...]: every output element reads in / groups × k inputs.
  return Elements(*y) * Elements(std::vector<int64_t>(w->begin() + 1, w->end()));
}

int64_t Macs(const Graph& g, const Node& n) {
  if (n.kind == OpKind::kConv) return ConvMacs(g, n);
  if (n.kind == OpKind::kLinear || n.op == "aten::matmul" || n.op == "aten::mm" ||
      n.op == "aten::bmm" || n.op == "aten::addmm") {
    return MatrixMacs(g, n);
  }
  return 0;
}

}  // namespace internal_cost

absl::StatusOr<ModelCost> CountCost(const Graph& graph) {
  using namespace internal_cost;
  ModelCost cost;
  for (const Node* n : graph.LiveNodes()) {
    LayerCost row;
    row.layer = n->name;
    row.op_type = OpTypeName(n->kind, n->op);
    bool has_tensor_output = false;
    for (int out : n->outputs) {
      const Value& v = graph.values[out];
      if (!v.is_tensor) continue;
      has_tensor_output = true;
      if ((!v.shape || !v.dtype) && n->parent >= 0) {
        has_tensor_output = false;
        ++cost.unreached_layers;
        break;
      }
      if (!v.shape || !v.dtype) {
        return absl::FailedPreconditionError(absl::StrCat(
            n->name, ": output shape unknown (infer shapes from an example input first, or the example run did not reach it)"));
      }
      row.activation_bytes += Elements(*v.shape) * static_cast<int64_t>(c10::elementSize(*v.dtype));
    }
    if (!has_tensor_output) continue;
    for (const auto& [role, vid] : n->params) {
      if (role != "weight" && role != "bias") continue;
      const at::Tensor& t = graph.values[vid].constant->toTensor();
      row.parameters += t.numel();
      row.parameter_bytes += t.numel() * static_cast<int64_t>(t.element_size());
    }
    row.macs = Macs(graph, *n);
    cost.macs += row.macs;
    cost.parameters += row.parameters;
    cost.parameter_bytes += row.parameter_bytes;
    cost.activation_bytes += row.activation_bytes;
    cost.layers.push_back(std::move(row));
  }
  return cost;
}

}  // namespace qopt
