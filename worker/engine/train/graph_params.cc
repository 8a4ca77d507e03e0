#include "train/graph_params.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"

namespace qopt {

GraphParams CollectGraphParams(const Graph& graph, double learning_rate, double weight_decay,
                               const std::function<void(int vid, const at::Tensor&)>& on_param) {
  GraphParams p;
  p.weights.learning_rate = learning_rate;
  p.weights.weight_decay = weight_decay;
  p.biases.learning_rate = learning_rate;
  for (const Node* n : graph.LiveNodes()) {
    for (const auto& [role, vid] : n->params) {
      if ((role != "weight" && role != "bias") || p.leaves.count(vid)) continue;
      const Value& v = graph.values[vid];
      if (!v.constant || !v.constant->isTensor() || !v.constant->toTensor().is_floating_point()) continue;
      const at::Tensor current = v.constant->toTensor();
      if (on_param) on_param(vid, current);
      at::Tensor leaf = current.detach().clone().requires_grad_(true);
      p.leaves[vid] = leaf;
      const std::string name = absl::StrCat(vid, ":", v.name);
      if (role == "weight") {
        p.weights.tensors.emplace_back(name, leaf);
        ++p.weight_tensors;
        p.weight_values += leaf.numel();
      } else {
        p.biases.tensors.emplace_back(name, leaf);
        ++p.bias_tensors;
      }
    }
  }
  return p;
}

void WriteGraphParams(Graph& graph, const std::map<int, at::Tensor>& leaves) {
  at::NoGradGuard no_grad;
  for (const auto& [vid, leaf] : leaves) graph.values[vid].constant = leaf.detach().clone();
}

}  // namespace qopt
