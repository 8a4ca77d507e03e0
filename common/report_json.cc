#include "report_json.h"

#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"

namespace qopt {

std::string ReportToJson(const v1::Report& report) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string json;
  // Printing a message that was built in memory cannot fail.
  (void)google::protobuf::util::MessageToJsonString(report, &json, options);
  return json;
}

absl::StatusOr<v1::Report> ReportFromJson(const std::string& json) {
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  v1::Report report;
  const auto status = google::protobuf::util::JsonStringToMessage(json, &report, options);
  if (!status.ok()) return absl::InvalidArgumentError(absl::StrCat("not a report: ", status.message().as_string()));
  return report;
}

}  // namespace qopt
