#include "recipe_inputs.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "errors.h"
#include "recipe_files.h"
#include "recipe_json.h"
#include "sha256.h"
#include "yaml_json.h"
#include "status.h"
#include "upload.h"

namespace qopt::cli {
namespace {

namespace fs = std::filesystem;

// A bare sha256 stays as it is unless a file of that name sits next to the recipe.
std::string ResolveAgainst(const fs::path& folder, const std::string& path) {
  if (path.empty() || fs::path(path).is_absolute()) return path;
  const fs::path candidate = folder / path;
  std::error_code ec;
  if (IsSha256Hex(path) && !fs::exists(candidate, ec)) return path;
  return candidate.lexically_normal().string();
}

}  // namespace

absl::StatusOr<v1::Recipe> LoadRecipe(const std::string& path, const RecipeOverrides& overrides) {
  std::ifstream in(path);
  if (!in) return UsageError(absl::StrCat("cannot read recipe ", path));
  std::stringstream text;
  text << in.rdbuf();
  std::string json = text.str();
  const std::string ext = fs::path(path).extension().string();
  if (ext == ".yaml" || ext == ".yml") {
    absl::StatusOr<std::string> converted = YamlToJson(json);
    if (!converted.ok()) return UsageError(absl::StrCat(path, ": ", converted.status().message()));
    json = *converted;
  }

  absl::StatusOr<v1::Recipe> parsed = ParseRecipeJson(json);
  if (!parsed.ok()) return UsageError(absl::StrCat(path, ": ", parsed.status().message()));
  v1::Recipe recipe = *std::move(parsed);

  const fs::path folder = fs::path(path).parent_path();
  (void)EditRecipeFiles(&recipe, [&](const std::string&, std::string* value) {
    *value = ResolveAgainst(folder, *value);
    return absl::OkStatus();
  });
  if (!overrides.model.empty()) recipe.mutable_model()->set_path(overrides.model);
  if (!overrides.data.empty()) recipe.mutable_calibration_data()->set_path(overrides.data);
  if (!overrides.eval_data.empty()) recipe.mutable_evaluation_data()->set_path(overrides.eval_data);
  if (!overrides.eval_labels.empty()) {
    recipe.mutable_evaluation_data()->set_labels_path(overrides.eval_labels);
  }
  return recipe;
}

absl::Status UploadRecipeInputs(Connection& connection, v1::Recipe* recipe) {
  // The same file often serves as calibration and evaluation data; hash it once.
  std::map<std::string, std::string> uploaded;
  return EditRecipeFiles(recipe, [&](const std::string& field, std::string* value) -> absl::Status {
    std::string& path = *value;
    if (auto it = uploaded.find(path); it != uploaded.end()) {
      path = it->second;
      return absl::OkStatus();
    }
    std::error_code ec;
    const fs::file_status st = fs::status(path, ec);
    if (fs::is_regular_file(st)) {
      absl::StatusOr<FileDigest> blob = UploadFile(connection, path);
      if (!blob.ok()) {
        if (IsUsageError(blob.status())) return blob.status();
        return absl::Status(blob.status().code(),
                            absl::StrCat("uploading ", path, ": ", blob.status().message()));
      }
      uploaded.emplace(path, blob->sha256);
      path = blob->sha256;
    } else if (fs::is_directory(st)) {
      return UsageError(absl::StrCat(field, ": ", path, " is a folder; the service takes single files"));
    } else if (!IsSha256Hex(path)) {
      return UsageError(absl::StrCat(field, ": no such file: ", path));
    }
    return absl::OkStatus();
  });
}

}  // namespace qopt::cli
