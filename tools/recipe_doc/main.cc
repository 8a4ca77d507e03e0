// qopt-recipe-doc: prints the recipe reference (docs/recipe.md) made from recipe.proto's
// comments and the step registry. With --check FILE it prints nothing and fails when FILE
// differs, naming the first differing line: the test that keeps the committed file current.
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include <CLI/CLI.hpp>

#include "absl/strings/str_split.h"
#include "proto_comments.h"
#include "recipe_markdown.h"

namespace {

// "" when `expected` and `actual` are the same text, else where they first differ.
std::string FirstDifference(const std::string& expected, const std::string& actual) {
  if (expected == actual) return "";
  const std::vector<std::string> want = absl::StrSplit(expected, '\n');
  const std::vector<std::string> have = absl::StrSplit(actual, '\n');
  size_t line = 0;
  while (line < want.size() && line < have.size() && want[line] == have[line]) ++line;
  auto at = [&](const std::vector<std::string>& lines) { return line < lines.size() ? lines[line] : "(end of file)"; };
  return "line " + std::to_string(line + 1) + " reads\n  " + at(have) + "\nwhere recipe.proto and the step registry give\n  " +
         at(want);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Prints the recipe reference (docs/recipe.md) made from recipe.proto's comments and the step registry"};
  std::string descriptors = QOPT_RECIPE_DESCRIPTORS;
  std::string check;
  app.add_option("--descriptors", descriptors, "recipe.proto with its comments, as protoc --include_source_info writes it")
      ->capture_default_str();
  app.add_option("--check", check, "Print nothing; exit 1 if this file differs from the reference");
  CLI11_PARSE(app, argc, argv);

  absl::StatusOr<qopt::recipe_doc::ProtoComments> comments = qopt::recipe_doc::ProtoComments::Load(descriptors);
  if (!comments.ok()) {
    std::cerr << comments.status().message() << "\n";
    return 2;
  }
  const std::string markdown = qopt::recipe_doc::RecipeMarkdown(*comments);
  if (check.empty()) {
    std::cout << markdown;
    return 0;
  }
  std::ifstream in(check);
  std::stringstream committed;
  committed << in.rdbuf();
  const std::string difference = in ? FirstDifference(markdown, committed.str()) : "it cannot be read";
  if (difference.empty()) return 0;
  std::cerr << check << " is out of date: " << difference << "\nRegenerate it from the repository root:\n  "
            << qopt::recipe_doc::kRegenerateCommand << "\n";
  return 1;
}
