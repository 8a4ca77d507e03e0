#include "steps/training_check.h"

namespace qopt {

absl::Status CheckOneOf(const std::string& where, const std::string& field, const std::string& value,
                        std::initializer_list<const char*> allowed) {
  for (const char* a : allowed) {
    if (value == a) return absl::OkStatus();
  }
  std::string list;
  for (const char* a : allowed) absl::StrAppend(&list, list.empty() ? "" : ", ", a);
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", field, " '", value, "' is not one of ", list));
}

}  // namespace qopt
