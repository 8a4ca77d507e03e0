// report.json: the typed Report in protobuf's JSON mapping, with the field names of
// report.proto and every figure printed (a zero is a result too).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "qopt/v1/report.pb.h"

namespace qopt {

/// Indented JSON of `report`.
std::string ReportToJson(const v1::Report& report);

/// Parses report.json; unknown fields are ignored so reports of older workers still read.
absl::StatusOr<v1::Report> ReportFromJson(const std::string& json);

}  // namespace qopt
