// TorchScript import: file -> frozen, inlined, mutation-free TorchScript graph -> qopt IR.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace qopt {

/// Loads a TorchScript file saved by `torch.jit.trace(...).save()` or
/// `torch.jit.script(...).save()` and builds the IR on the CPU.
/// Fails with InvalidArgument for a file that is missing, truncated or not TorchScript,
/// and with Unimplemented for ops the engine cannot run (control flow left after freezing,
/// ops absent from the operator registry), naming the op and the layer.
absl::StatusOr<Graph> ImportTorchScript(const std::string& path);

}  // namespace qopt
