// NumPy .npy arrays (data/dataset.h builds data sets on top of this).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace qopt {

/// Reads a .npy file (float32, float64 or uint8; C order) as a float32 tensor.
absl::StatusOr<at::Tensor> LoadNpy(const std::string& path);

/// Parses .npy bytes; `name` labels errors. Keeps the stored dtype (float32, float64,
/// uint8, int64, int32).
absl::StatusOr<at::Tensor> ParseNpy(const std::vector<char>& bytes, const std::string& name);

/// Reads a whole file; InvalidArgument naming it when missing or unreadable.
absl::StatusOr<std::vector<char>> ReadFileBytes(const std::string& path);

/// Bytes of a dense tensor of `shape` with `element_size`-byte elements, or nullopt when a
/// dimension is negative or the product of the non-zero dimensions overflows int64_t (so
/// do the strides, even of an empty tensor): file headers are untrusted, and the size must
/// be checked against the file before anything is allocated.
std::optional<size_t> DenseBytes(const std::vector<int64_t>& shape, size_t element_size);

}  // namespace qopt
