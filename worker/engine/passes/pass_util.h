// Small graph queries the passes share.
#pragma once

#include "ir/graph.h"

namespace qopt {

/// The only live consumer of value `vid`, or -1 (several, none, or a graph output): a
/// pass may rewrite a value's producer only when nothing else sees the value.
int SoleConsumer(const Graph& g, int vid);

}  // namespace qopt
