#include "recipe_markdown.h"

#include <algorithm>
#include <map>

#include <google/protobuf/text_format.h>
#include <google/protobuf/util/json_util.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "qopt/v1/recipe.pb.h"
#include "steps/step_spec.h"

namespace qopt::recipe_doc {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// ---- Markdown text

// Comment text made safe for Markdown: outside `code` spans < > and * would be read as
// HTML or emphasis; | ends a table cell anywhere.
std::string Escape(absl::string_view text) {
  std::string out;
  bool code = false;
  for (const char c : text) {
    if (c == '`') code = !code;
    if (c == '|') {
      out += "\\|";
    } else if (!code && c == '<') {
      out += "&lt;";
    } else if (!code && c == '>') {
      out += "&gt;";
    } else if (!code && c == '*') {
      out += "\\*";
    } else {
      out += c;
    }
  }
  return out;
}

// A comment on one line (a table cell).
std::string Cell(absl::string_view comment) {
  return Escape(absl::StrJoin(absl::StrSplit(comment, '\n', absl::SkipEmpty()), " "));
}

// A comment as paragraphs, which its blank lines separate.
std::string Paragraphs(absl::string_view comment) {
  std::vector<std::string> paragraphs;
  for (absl::string_view p : absl::StrSplit(comment, "\n\n", absl::SkipWhitespace())) paragraphs.push_back(Cell(p));
  return absl::StrJoin(paragraphs, "\n\n");
}

std::string Code(absl::string_view text) { return absl::StrCat("`", text, "`"); }

// "`a`, `b` or `c`".
std::string Words(const std::vector<std::string>& names, absl::string_view conjunction) {
  std::vector<std::string> coded;
  for (const std::string& name : names) coded.push_back(Code(name));
  if (coded.size() <= 1) return absl::StrJoin(coded, "");
  const std::string last = coded.back();
  coded.pop_back();
  return absl::StrCat(absl::StrJoin(coded, ", "), " ", conjunction, " ", last);
}

// ---- The step registry

const FieldDescriptor& StepField(const StepSpec& spec) {
  return *v1::Step::descriptor()->FindFieldByNumber(spec.kind);
}

// The names of the registered steps whose spec has `flag` set, in registry order.
std::vector<std::string> StepsWhere(bool StepSpec::*flag) {
  std::vector<std::string> names;
  for (const StepSpec* spec : AllStepSpecs()) {
    if (spec->*flag) names.push_back(StepField(*spec).name());
  }
  return names;
}

// A step with all its options unset, as the registry fills it in.
v1::Step DefaultStep(const StepSpec& spec) {
  v1::Step step;
  step.GetReflection()->MutableMessage(&step, &StepField(spec));
  return StepWithDefaults(step);
}

// Field full name -> the value the registry fills in where a recipe leaves it unset.
using Defaults = std::map<std::string, std::string>;

std::string ValueText(const Message& message, const FieldDescriptor& field, int index) {
  const Reflection& r = *message.GetReflection();
  std::string text;
  if (field.message_type() != nullptr) {
    google::protobuf::util::JsonPrintOptions options;
    options.preserve_proto_field_names = true;
    (void)google::protobuf::util::MessageToJsonString(r.GetRepeatedMessage(message, &field, index), &text, options);
    return text;
  }
  google::protobuf::TextFormat::PrintFieldValueToString(message, &field, index, &text);
  return text;
}

void RecordDefaults(const Message& filled, Defaults* defaults) {
  const Reflection& r = *filled.GetReflection();
  std::vector<const FieldDescriptor*> set;
  r.ListFields(filled, &set);
  for (const FieldDescriptor* field : set) {
    if (field->message_type() != nullptr && !field->is_repeated()) {
      RecordDefaults(r.GetMessage(filled, field), defaults);
    } else if (field->is_repeated()) {
      std::vector<std::string> values;
      for (int i = 0; i < r.FieldSize(filled, field); ++i) values.push_back(ValueText(filled, *field, i));
      defaults->emplace(field->full_name(), absl::StrCat("[", absl::StrJoin(values, ", "), "]"));
    } else {
      defaults->emplace(field->full_name(), ValueText(filled, *field, -1));
    }
  }
}

Defaults RegistryDefaults() {
  Defaults defaults;
  for (const StepSpec* spec : AllStepSpecs()) {
    const v1::Step step = DefaultStep(*spec);
    RecordDefaults(step.GetReflection()->GetMessage(step, &StepField(*spec)), &defaults);
  }
  return defaults;
}

// ---- Tables

// Step option messages are documented in their step's section, the rest under their name.
std::string Anchor(const Descriptor& type) {
  if (&type == v1::Step::descriptor()) return "steps";
  for (const StepSpec* spec : AllStepSpecs()) {
    if (StepField(*spec).message_type() == &type) return StepField(*spec).name();
  }
  return absl::AsciiStrToLower(type.name());
}

std::string SingleType(const FieldDescriptor& field) {
  if (field.message_type() != nullptr) {
    return absl::StrCat("[", field.message_type()->name(), "](#", Anchor(*field.message_type()), ")");
  }
  if (field.enum_type() != nullptr) return field.enum_type()->name();
  if (field.options().GetExtension(v1::file)) return "string (file)";
  return field.type_name();
}

std::string TypeText(const FieldDescriptor& field) {
  if (field.is_map()) {
    return absl::StrCat("map of ", SingleType(*field.message_type()->map_key()), " to ",
                        SingleType(*field.message_type()->map_value()));
  }
  return field.is_repeated() ? absl::StrCat("list of ", SingleType(field)) : SingleType(field);
}

std::string DefaultText(const FieldDescriptor& field, const Defaults& defaults) {
  if (const auto it = defaults.find(field.full_name()); it != defaults.end()) return Code(it->second);
  if (field.is_map()) return Code("{}");
  if (field.is_repeated()) return Code("[]");
  if (field.message_type() != nullptr || field.has_presence()) return "unset";
  switch (field.cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING:
      return Code("\"\"");
    case FieldDescriptor::CPPTYPE_BOOL:
      return Code("false");
    case FieldDescriptor::CPPTYPE_ENUM:
      return Code(field.enum_type()->value(0)->name());
    default:
      return Code("0");
  }
}

std::string FieldsTable(const Descriptor& type, const ProtoComments& comments, const Defaults& defaults) {
  if (type.field_count() == 0) return "No options: write `{}`.\n";
  std::string table = "| field | type | default | meaning |\n|---|---|---|---|\n";
  for (int i = 0; i < type.field_count(); ++i) {
    const FieldDescriptor& field = *type.field(i);
    absl::StrAppend(&table, "| ", Code(field.name()), " | ", TypeText(field), " | ",
                    Escape(DefaultText(field, defaults)), " | ", Cell(comments.Of(field)), " |\n");
  }
  return table;
}

// ---- Sections

constexpr char kTitle[] = R"(# Recipe reference

<!-- Generated by tools/recipe_doc from proto/qopt/v1/recipe.proto (its comments) and the
step registry (common/steps/). Do not edit: change those, then run
  )";

constexpr char kIntro[] = R"(
The test recipe_doc_current fails while this file differs from what they give. -->

A recipe is one job: the model, its data, the quantization settings and the steps to run,
in order. `qopt-worker run --recipe FILE` runs one offline; `qopt submit FILE` sends one
to the service. The schema is `qopt.v1.Recipe` in `proto/qopt/v1/recipe.proto`; this page
lists every field with its type, default and meaning, from that file's comments and from
the step registry (`common/steps/`), which fills in the steps' defaults and checks their
order. Examples: `examples/recipes/`.

## Writing a recipe

- **JSON**, read with protobuf's JSON mapping. Field names as below (snake_case);
  protobuf's lowerCamel spellings (`batchSize`) are read too. Numbers may be written as
  strings (`"16"`).
- **YAML** (`.yaml` / `.yml`, read by `qopt submit`): the same fields and nesting; the CLI
  turns it into JSON and reads that.
- An unknown or misspelled field, or a value of the wrong kind, is an error that names
  its place in the recipe and, for a name, the names allowed there:
  `invalid recipe: steps[2].adaround: unknown field "iterations"; allowed: num_iterations, num_batches, ...`
- A field left out takes its **default**: the value the step registry fills in, or else
  the field's zero, whose meaning the description gives ("0 = all").
- Fields of type `string (file)` name files: a local path (relative to the recipe file's
  folder) offline and for `qopt submit`, which uploads it; an uploaded blob's sha256 in
  the service.
- Values are checked when a job is submitted and again before it runs; errors name the
  field (`steps[1]: calibrate.num_batches must be >= 0`).
)";

std::string RecipeSection(const ProtoComments& comments, const Defaults& defaults) {
  const Descriptor& recipe = *v1::Recipe::descriptor();
  return absl::StrCat("\n## Recipe\n\n", Paragraphs(comments.Of(recipe)), "\n\n",
                      FieldsTable(recipe, comments, defaults));
}

std::string OrderSection() {
  const std::vector<std::string> calibrators = StepsWhere(&StepSpec::calibrates);
  std::string rules = absl::StrCat(
      "\n### Rules of step order\n\n"
      "Steps run in the order written. A job is checked against these rules when it is submitted and again "
      "before it runs; an error names the step (`steps[2]: evaluate needs a calibrate step before it`).\n\n",
      "- ", Words(calibrators, "and"), " leave a calibrated simulation for the steps after them; ",
      Words(StepsWhere(&StepSpec::requires_sim), "and"), " need one before them.\n",
      "- ", Words(StepsWhere(&StepSpec::invalidates_sim), "and"),
      " change the model or rebuild the simulation, so none of them may come after ", Words(calibrators, "or"),
      ".\n");
  for (const std::string& automatic : StepsWhere(&StepSpec::automatic)) {
    absl::StrAppend(&rules, "- ", Code(automatic), " runs ", Words(StepsWhere(&StepSpec::part_of_auto_quant), "and"),
                    " itself, so none of them may come after it.\n");
  }
  for (const StepSpec* spec : AllStepSpecs()) {
    if (spec->order_rule != nullptr) absl::StrAppend(&rules, "- ", Code(StepField(*spec).name()), ": ", spec->order_rule, "\n");
  }
  absl::StrAppend(&rules, "- ", Words(StepsWhere(&StepSpec::reads_data), "and"),
                  " read data: a recipe with any of them needs `calibration_data` (which `evaluation_data` "
                  "defaults to).\n"
                  "- No two steps may write the same artifact file; give one of them another `prefix`.\n");
  return rules;
}

std::vector<std::string> StepRules(const StepSpec& spec) {
  const std::string calibrators = Words(StepsWhere(&StepSpec::calibrates), "or");
  std::vector<std::string> rules;
  if (spec.requires_sim) rules.push_back(absl::StrCat("Needs a calibrated simulation: comes after ", calibrators, "."));
  if (spec.invalidates_sim) {
    rules.push_back(absl::StrCat("Changes the model or rebuilds the simulation: cannot come after ", calibrators, "."));
  }
  if (spec.part_of_auto_quant) {
    rules.push_back(absl::StrCat("Cannot come after ", Words(StepsWhere(&StepSpec::automatic), "or"),
                                 ", which runs it itself."));
  }
  if (spec.order_rule != nullptr) rules.push_back(spec.order_rule);
  if (spec.calibrates) rules.push_back("Leaves a calibrated simulation for the steps after it.");
  if (spec.reads_data) rules.push_back("Reads data: the recipe needs `calibration_data`.");
  if (spec.artifacts != nullptr) {
    rules.push_back(absl::StrCat("Writes ", Words(spec.artifacts(DefaultStep(spec)), "and"), " (with its defaults)."));
  }
  return rules;
}

std::string StepSection(const StepSpec& spec, const ProtoComments& comments, const Defaults& defaults) {
  const Descriptor& options = *StepField(spec).message_type();
  std::string section = absl::StrCat("\n### ", StepField(spec).name(), "\n\n");
  if (const std::string text = comments.Of(options); !text.empty()) absl::StrAppend(&section, Paragraphs(text), "\n\n");
  for (const std::string& rule : StepRules(spec)) absl::StrAppend(&section, "- ", rule, "\n");
  absl::StrAppend(&section, "\n", FieldsTable(options, comments, defaults));
  return section;
}

std::string StepsSection(const ProtoComments& comments, const Defaults& defaults) {
  std::vector<std::string> links;
  for (const StepSpec* spec : AllStepSpecs()) {
    const std::string name = StepField(*spec).name();
    links.push_back(absl::StrCat("[", name, "](#", name, ")"));
  }
  std::string section = absl::StrCat(
      "\n## Steps\n\n", Paragraphs(comments.Of(*v1::Step::descriptor())),
      "\n\nThe steps, in the registry's order (common/steps/step_list.h): ", absl::StrJoin(links, ", "), ".\n",
      OrderSection());
  for (const StepSpec* spec : AllStepSpecs()) absl::StrAppend(&section, StepSection(*spec, comments, defaults));
  return section;
}

bool IsStepOptions(const Descriptor& type) {
  return std::any_of(AllStepSpecs().begin(), AllStepSpecs().end(),
                     [&](const StepSpec* spec) { return StepField(*spec).message_type() == &type; });
}

std::string MessagesSection(const ProtoComments& comments, const Defaults& defaults) {
  std::string section = "\n## Messages\n\nThe parts that the recipe and its steps share.\n";
  for (const Descriptor* type : ReachableMessages(*v1::Recipe::descriptor())) {
    if (type == v1::Recipe::descriptor() || type == v1::Step::descriptor() || IsStepOptions(*type)) continue;
    absl::StrAppend(&section, "\n### ", type->name(), "\n\n", Paragraphs(comments.Of(*type)), "\n\n",
                    FieldsTable(*type, comments, defaults));
  }
  return section;
}

void Walk(const Descriptor& type, std::vector<const Descriptor*>* seen) {
  if (type.options().map_entry() || absl::StartsWith(type.full_name(), "google.protobuf.") ||
      std::find(seen->begin(), seen->end(), &type) != seen->end()) {
    return;
  }
  seen->push_back(&type);
  for (int i = 0; i < type.field_count(); ++i) {
    const FieldDescriptor& field = *type.field(i);
    const Descriptor* next = field.is_map() ? field.message_type()->map_value()->message_type() : field.message_type();
    if (next != nullptr) Walk(*next, seen);
  }
}

}  // namespace

std::vector<const Descriptor*> ReachableMessages(const Descriptor& root) {
  std::vector<const Descriptor*> seen;
  Walk(root, &seen);
  return seen;
}

std::string RecipeMarkdown(const ProtoComments& comments) {
  const Defaults defaults = RegistryDefaults();
  return absl::StrCat(kTitle, kRegenerateCommand, kIntro, RecipeSection(comments, defaults), StepsSection(comments, defaults),
                      MessagesSection(comments, defaults));
}

}  // namespace qopt::recipe_doc
