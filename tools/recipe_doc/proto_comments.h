// The comments of .proto files, which generated code drops: read from a descriptor set
// that protoc wrote with --include_source_info. The recipe reference takes each message's
// and field's meaning from here.
#pragma once

#include <memory>
#include <string>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor_database.h>

#include "absl/status/statusor.h"

namespace qopt::recipe_doc {

class ProtoComments {
 public:
  /// Reads the FileDescriptorSet at `path` (protoc --include_source_info
  /// --include_imports --descriptor_set_out=path). Fails when the file cannot be read or
  /// parsed, or its files do not build.
  static absl::StatusOr<ProtoComments> Load(const std::string& path);

  /// The comment above the message or field (the one after a field on its line when
  /// there is none above), its lines trimmed and joined by '\n'; "" when there is none or
  /// the set does not declare it. Looked up by full name, so the compiled descriptor of
  /// the same type may be passed.
  std::string Of(const google::protobuf::Descriptor& message) const;
  std::string Of(const google::protobuf::FieldDescriptor& field) const;

 private:
  ProtoComments() = default;

  std::unique_ptr<google::protobuf::SimpleDescriptorDatabase> database_;
  std::unique_ptr<google::protobuf::DescriptorPool> pool_;  // reads database_
};

}  // namespace qopt::recipe_doc
