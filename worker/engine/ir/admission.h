// Model admission: a TorchScript file is a program, and qopt runs only the tensor
// arithmetic in it. The archive is checked before it is loaded (loading runs a
// module's `__setstate__`), and the forward graph before any pass evaluates it
// (constant propagation runs ops whose inputs are constants, `aten::from_file` included).
#pragma once

#include <string>

#include "absl/status/status.h"

namespace torch::jit {
class Graph;
}

namespace qopt {

/// Refuses an archive whose code defines `__setstate__`, which TorchScript runs while
/// loading, before anything else can look at it. `path` must be a zip archive.
absl::Status AdmitArchive(const std::string& path);

/// Checks every op of `graph` (inlined: calls resolved; blocks included) and refuses the
/// first that is not a tensor op: an operator outside the `aten` and `prim` namespaces
/// (custom operator libraries, distributed, profiler), one that TorchScript itself
/// classes as having side effects (printing, saving, RPC, futures, global seeds, calls
/// that dispatch at run time) other than raising exceptions and warnings, and file
/// readers (`aten::from_file`) and threads (`prim::fork`). The error names the op and why.
absl::Status AdmitGraph(const torch::jit::Graph& graph);

/// The load error for an operator TorchScript does not know ("Unknown builtin op: x::y"),
/// named as a refused custom operator; other messages unchanged.
std::string ExplainLoadError(const std::string& first_line);

}  // namespace qopt
