// Artifact names and export prefixes are plain file names: they name a file inside a job's
// output folder on the worker and inside the destination folder of a download, so none may
// reach outside it. Shared by the recipe check, the server and the clients.
#pragma once

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace qopt {

/// OK for 1-255 bytes with no '/', '\\', NUL or other control character, not starting
/// with '.' (which also rules out "." and ".."). Otherwise InvalidArgument
/// "<what> '<name>' is not a plain file name: ...".
[[nodiscard]] absl::Status CheckPlainFileName(absl::string_view what, absl::string_view name);

}  // namespace qopt
