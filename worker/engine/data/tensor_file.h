// Calibration / evaluation data from files: NumPy .npy arrays and tensors saved with
// torch.save. The first axis indexes samples.
#pragma once

#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace qopt {

/// Reads a .npy file (float32, float64 or uint8; C order) as a float32 tensor.
absl::StatusOr<at::Tensor> LoadNpy(const std::string& path);

/// Reads a tensor saved with torch.save (a tensor, or a list/tuple of equally shaped
/// tensors, stacked) as a float32 tensor.
absl::StatusOr<at::Tensor> LoadTorchSaved(const std::string& path);

/// Picks the reader by content: the NumPy magic string, else a torch.save zip archive.
absl::StatusOr<at::Tensor> LoadTensorFile(const std::string& path);

/// Splits `data` along its first axis into batches of `batch_size` (the last may be
/// smaller), using at most `max_samples` samples (0 = all).
std::vector<at::Tensor> MakeBatches(const at::Tensor& data, int64_t batch_size,
                                    int64_t max_samples);

}  // namespace qopt
