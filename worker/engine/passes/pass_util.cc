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

}  // namespace qopt
