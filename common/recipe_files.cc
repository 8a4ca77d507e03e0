#include "recipe_files.h"

#include <functional>

#include "absl/strings/str_cat.h"
#include "status.h"

namespace qopt {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using Edit = std::function<absl::Status(const std::string& field, std::string* value)>;

bool IsFile(const FieldDescriptor& field) {
  return field.type() == FieldDescriptor::TYPE_STRING && !field.is_repeated() &&
         field.options().GetExtension(v1::file);
}

std::string Join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : absl::StrCat(prefix, ".", name);
}

// Visits sub-messages that are set (and repeated ones element by element, "steps[2]"), so
// a walk never adds one.
absl::Status Walk(Message* message, const std::string& prefix, const Edit& edit) {
  const google::protobuf::Reflection* r = message->GetReflection();
  const google::protobuf::Descriptor* d = message->GetDescriptor();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    const std::string where = Join(prefix, f->name());
    if (f->type() == FieldDescriptor::TYPE_MESSAGE) {
      if (!f->is_repeated()) {
        if (r->HasField(*message, f)) RETURN_IF_ERROR(Walk(r->MutableMessage(message, f), where, edit));
        continue;
      }
      for (int k = 0; k < r->FieldSize(*message, f); ++k) {
        RETURN_IF_ERROR(Walk(r->MutableRepeatedMessage(message, f, k), absl::StrCat(where, "[", k, "]"), edit));
      }
    } else if (IsFile(*f) && !r->GetString(*message, f).empty()) {
      std::string value = r->GetString(*message, f);
      RETURN_IF_ERROR(edit(where, &value));
      if (value != r->GetString(*message, f)) r->SetString(message, f, std::move(value));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<RecipeFile> RecipeFiles(const v1::Recipe& recipe) {
  // Walking a copy keeps one walker; recipes are a few hundred bytes.
  v1::Recipe copy = recipe;
  std::vector<RecipeFile> files;
  (void)Walk(&copy, "", [&](const std::string& field, std::string* value) {
    files.push_back({field, *value});
    return absl::OkStatus();
  });
  return files;
}

absl::Status EditRecipeFiles(v1::Recipe* recipe, const Edit& edit) { return Walk(recipe, "", edit); }

std::vector<std::pair<std::string, const v1::DataRef*>> RecipeDataRefs(const v1::Recipe& recipe) {
  std::vector<std::pair<std::string, const v1::DataRef*>> refs;
  std::function<void(const Message&, const std::string&)> collect = [&](const Message& m, const std::string& prefix) {
    const google::protobuf::Reflection* r = m.GetReflection();
    std::vector<const FieldDescriptor*> fields;
    r->ListFields(m, &fields);
    for (const FieldDescriptor* f : fields) {
      if (f->type() != FieldDescriptor::TYPE_MESSAGE) continue;
      const std::string where = Join(prefix, f->name());
      if (f->is_repeated()) {
        for (int k = 0; k < r->FieldSize(m, f); ++k) collect(r->GetRepeatedMessage(m, f, k), absl::StrCat(where, "[", k, "]"));
      } else if (f->message_type() == v1::DataRef::descriptor()) {
        refs.emplace_back(where, static_cast<const v1::DataRef*>(&r->GetMessage(m, f)));
      } else {
        collect(r->GetMessage(m, f), where);
      }
    }
  };
  collect(recipe, "");
  return refs;
}

}  // namespace qopt
