// docs/recipe.md, the recipe reference, written from recipe.proto's comments and the
// step registry (common/steps), so that it says what the code does and cannot drift.
#pragma once

#include <string>
#include <vector>

#include <google/protobuf/descriptor.h>

#include "proto_comments.h"

namespace qopt::recipe_doc {

/// How docs/recipe.md is made, from the repository root after a build.
inline constexpr char kRegenerateCommand[] = "build/tools/recipe_doc/qopt-recipe-doc > docs/recipe.md";

/// The message types a recipe can hold, `root` first, each once, in the order a
/// depth-first walk of the fields meets them; map entries and protobuf's own types
/// (google.protobuf.*) left out.
std::vector<const google::protobuf::Descriptor*> ReachableMessages(const google::protobuf::Descriptor& root);

/// The reference in Markdown: how recipes are written, the fields of qopt.v1.Recipe, the
/// rules of step order, one section per step in registry order (its options with type,
/// default and meaning, its order rules, the artifacts it writes), then the other
/// messages. Defaults are those the registry fills in (StepWithDefaults) and otherwise
/// the field's zero, whose meaning the comment gives.
std::string RecipeMarkdown(const ProtoComments& comments);

}  // namespace qopt::recipe_doc
