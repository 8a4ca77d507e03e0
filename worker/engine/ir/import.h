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

/// Runs LibTorch's one-time initialisation that the first import pays (the TorchScript
/// compiler and loader, freezing, the operator registry, a first forward) on a small model
/// of qopt's own, on one thread and starting none: for the zygote (sandbox/zygote.h), so
/// that each job it forks starts warm. Failing only leaves the first job slower.
void WarmUpImport();

}  // namespace qopt
