// Export to a TorchScript file that stock PyTorch loads with torch.jit.load: the IR's
// ops with the (folded) parameters as attributes of modules named like the user's
// (`layer1.0.conv1.weight` is `model.layer1[0].conv1.weight`), and, when a QuantSim is
// given, standard aten::fake_quantize_per_tensor_affine / _per_channel_affine ops where
// its quantizers sit. Its output equals QuantSim::Forward.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "eval/evaluate.h"
#include "ir/graph.h"
#include "quant/quantsim.h"

namespace qopt {

/// Writes `graph` (and `sim`'s quantizers, when not null) to `path`.
absl::Status ExportTorchScript(const Graph& graph, const QuantSim* sim, const std::string& path);

/// The TorchScript file at `path` (one this export wrote) loaded as stock PyTorch loads
/// it, torch.jit.load, on `device`: its forward as a model function.
absl::StatusOr<ModelFn> LoadTorchScript(const std::string& path, c10::Device device);

}  // namespace qopt
