// Training checkpoints: named tensors and a JSON header in qopt's own file format, so
// resuming never unpickles anything. A checkpoint comes from a job that ran an untrusted
// model and may be handed to another worker: reading it checks every size against the
// file before allocating, and the caller matches names and shapes to what it trains.
//
// Layout: "QOPTCKPT", a little-endian uint64 header length, the header (JSON: "meta",
// and "tensors": [{name, dtype, shape, offset, bytes}]), then the tensors' bytes.
#pragma once

#include <map>
#include <string>

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"

namespace qopt {

struct Checkpoint {
  nlohmann::json meta = nlohmann::json::object();  // what the writer needs besides tensors
  std::map<std::string, at::Tensor> tensors;       // float32, float64 or int64; CPU
};

/// Writes `checkpoint` to `path` atomically (a temporary file, fsync, rename): a reader
/// sees the previous checkpoint or this one, never a torn file.
absl::Status WriteCheckpoint(const std::string& path, const Checkpoint& checkpoint);

/// Reads a checkpoint. NotFound when there is no file; InvalidArgument naming the problem
/// for anything that is not a well-formed checkpoint no larger than `max_bytes`.
absl::StatusOr<Checkpoint> ReadCheckpoint(const std::string& path, int64_t max_bytes = int64_t{4} << 30);

/// Only the `meta` of the checkpoint at `path`, reading its header and none of its
/// tensors. NotFound when there is no file; InvalidArgument for a file that is not a
/// checkpoint or whose header is longer than `max_header_bytes`.
absl::StatusOr<nlohmann::json> ReadCheckpointMeta(const std::string& path, int64_t max_header_bytes = int64_t{64} << 20);

}  // namespace qopt
