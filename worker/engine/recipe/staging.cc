#include "recipe/staging.h"

#include <unistd.h>

#include <fstream>

#include "absl/strings/str_cat.h"

namespace qopt {

namespace fs = std::filesystem;

absl::StatusOr<Staging> Staging::Create(const std::string& out_dir) {
  if (out_dir.empty()) return absl::InvalidArgumentError("no output directory given (--out)");
  std::error_code ec;
  fs::path out = fs::absolute(out_dir, ec);
  if (fs::exists(out, ec) && !fs::is_directory(out, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("output path exists and is not a directory: ", out_dir));
  }
  fs::path parent = out.parent_path();
  fs::create_directories(parent, ec);
  // The process id keeps two runs into the same folder apart.
  fs::path staging = parent / absl::StrCat(".", out.filename().string(), ".partial-", getpid());
  fs::remove_all(staging, ec);
  if (!fs::create_directories(staging, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot create ", staging.string(), ": ", ec.message()));
  }
  return Staging(out, staging);
}

Staging::Staging(fs::path out, fs::path dir) : out_(std::move(out)), dir_(std::move(dir)) {}

Staging::Staging(Staging&& o) noexcept : out_(o.out_), dir_(o.dir_) { o.dir_.clear(); }

Staging::~Staging() {
  std::error_code ec;
  if (!dir_.empty()) fs::remove_all(dir_, ec);
}

std::string Staging::Path(const std::string& name) const { return (dir_ / name).string(); }

absl::Status Staging::Commit(const std::vector<std::string>& names) {
  std::error_code ec;
  fs::create_directories(out_, ec);
  for (const auto& name : names) {
    fs::rename(dir_ / name, out_ / name, ec);
    if (ec) {
      return absl::InternalError(absl::StrCat("cannot move ", name, " into ", out_.string(), ": ", ec.message()));
    }
  }
  return absl::OkStatus();
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

}  // namespace qopt
