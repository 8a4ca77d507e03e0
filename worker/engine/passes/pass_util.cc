#include "passes/pass_util.h"

#include <algorithm>

namespace qopt {

int SoleConsumer(const Graph& g, int vid) {
  int found = -1;
  for (int c : g.values[vid].consumers) {
    if (g.nodes[c].removed) continue;
    if (found >= 0 && found != c) return -1;
    found = c;
  }
  if (std::count(g.outputs.begin(), g.outputs.end(), vid)) return -1;
  return found;
}

std::optional<int64_t> ConvGroups(const Graph& g, const Node& n) {
  if (n.kind == OpKind::kLinear) return 1;
  const size_t slot = n.op == "aten::_convolution" ? 8 : 6;
  if (n.inputs.size() <= slot) return std::nullopt;
  const auto& c = g.values[n.inputs[slot]].constant;
  if (!c || !c->isInt()) return std::nullopt;
  return c->toInt();
}

}  // namespace qopt
