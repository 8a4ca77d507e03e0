#include "proto_comments.h"

#include <fstream>
#include <vector>

#include <google/protobuf/descriptor.pb.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace qopt::recipe_doc {
namespace {

std::string Text(const google::protobuf::SourceLocation& location) {
  const std::string& comment =
      location.leading_comments.empty() ? location.trailing_comments : location.leading_comments;
  std::vector<std::string> lines;
  for (absl::string_view line : absl::StrSplit(comment, '\n')) lines.emplace_back(absl::StripAsciiWhitespace(line));
  return std::string(absl::StripAsciiWhitespace(absl::StrJoin(lines, "\n")));
}

}  // namespace

absl::StatusOr<ProtoComments> ProtoComments::Load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  google::protobuf::FileDescriptorSet set;
  if (!in || !set.ParseFromIstream(&in)) return absl::NotFoundError(absl::StrCat("cannot read descriptor set ", path));
  ProtoComments comments;
  comments.database_ = std::make_unique<google::protobuf::SimpleDescriptorDatabase>();
  for (const google::protobuf::FileDescriptorProto& file : set.file()) comments.database_->Add(file);
  comments.pool_ = std::make_unique<google::protobuf::DescriptorPool>(comments.database_.get());
  for (const google::protobuf::FileDescriptorProto& file : set.file()) {
    if (comments.pool_->FindFileByName(file.name()) == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": ", file.name(), " does not build"));
    }
  }
  return comments;
}

std::string ProtoComments::Of(const google::protobuf::Descriptor& message) const {
  const google::protobuf::Descriptor* own = pool_->FindMessageTypeByName(message.full_name());
  google::protobuf::SourceLocation location;
  return own != nullptr && own->GetSourceLocation(&location) ? Text(location) : "";
}

std::string ProtoComments::Of(const google::protobuf::FieldDescriptor& field) const {
  const google::protobuf::FieldDescriptor* own = pool_->FindFieldByName(field.full_name());
  google::protobuf::SourceLocation location;
  return own != nullptr && own->GetSourceLocation(&location) ? Text(location) : "";
}

}  // namespace qopt::recipe_doc
