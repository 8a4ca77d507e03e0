#include "recipe/steps/run_context.h"

#include <algorithm>
#include <filesystem>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "data/dataset.h"
#include "ir/import.h"
#include "recipe_files.h"
#include "status.h"
#include "train/checkpoint.h"

namespace qopt {
namespace {

DatasetSpec SpecFromRef(const v1::DataRef& ref) {
  DatasetSpec spec;
  spec.path = ref.path();
  spec.labels_path = ref.labels_path();
  if (!ref.format().empty()) spec.format = ref.format();
  spec.max_samples = ref.max_samples();
  spec.shuffle = ref.shuffle();
  spec.seed = ref.seed();
  const v1::Preprocess& p = ref.preprocess();
  if (p.scale() != 0.0) spec.preprocess.scale = p.scale();
  spec.preprocess.resize = p.resize();
  spec.preprocess.center_crop = p.center_crop();
  spec.preprocess.channels = p.channels();
  spec.preprocess.mean.assign(p.mean().begin(), p.mean().end());
  spec.preprocess.std.assign(p.std().begin(), p.std().end());
  return spec;
}

absl::StatusOr<std::vector<Batch>> LoadBatches(const v1::DataRef& ref, const c10::Device& device) {
  ASSIGN_OR_RETURN(Dataset data, LoadDataset(SpecFromRef(ref)));
  data.inputs = data.inputs.to(device);
  return MakeBatches(data, ref.batch_size() > 0 ? ref.batch_size() : 16);
}

}  // namespace

absl::Status SetDetails(const nlohmann::ordered_json& details, v1::StepReport* part) {
  const auto status = google::protobuf::util::JsonStringToMessage(details.dump(), part->mutable_details());
  if (!status.ok()) return absl::InternalError(absl::StrCat("step details: ", status.message().as_string()));
  return absl::OkStatus();
}

size_t Limit(int n, size_t available) { return n > 0 ? std::min<size_t>(n, available) : available; }

RunContext::RunContext(const v1::Recipe& recipe, c10::Device device, QuantSimOptions sim_options,
                       const RunOptions& options, Staging* staging)
    : recipe_(recipe), device_(device), sim_options_(std::move(sim_options)), options_(options), staging_(staging) {}

absl::StatusOr<std::unique_ptr<Graph>> RunContext::Import() const {
  ASSIGN_OR_RETURN(Graph g, ImportTorchScript(recipe_.model().path()));
  g.To(device_);
  return std::make_unique<Graph>(std::move(g));
}

absl::StatusOr<const std::vector<Batch>*> RunContext::Calibration() {
  if (!calibration_loaded_) {
    ASSIGN_OR_RETURN(calibration_, LoadBatches(recipe_.calibration_data(), device_));
    calibration_loaded_ = true;
  }
  return &calibration_;
}

absl::StatusOr<const std::vector<Batch>*> RunContext::Evaluation() {
  if (recipe_.evaluation_data().path().empty()) return Calibration();
  if (!evaluation_loaded_) {
    ASSIGN_OR_RETURN(evaluation_, LoadBatches(recipe_.evaluation_data(), device_));
    evaluation_loaded_ = true;
  }
  return &evaluation_;
}

absl::StatusOr<const std::vector<Batch>*> RunContext::Validation(const std::string& choice) {
  if (recipe_.validation_data().path().empty()) {
    const std::string warning =
        absl::StrCat(choice, " was made on evaluation_data, the data of the final figures, which flatters them; give "
                     "the recipe validation_data (e.g. held-out training images) for choices");
    if (std::find(warnings_.begin(), warnings_.end(), warning) == warnings_.end()) {
      warnings_.push_back(warning);
      RETURN_IF_ERROR(Log(absl::StrCat("warning: ", warning)));
    }
  }
  return ValidationOrEvaluation();
}

absl::StatusOr<const std::vector<Batch>*> RunContext::ValidationOrEvaluation() {
  if (recipe_.validation_data().path().empty()) return Evaluation();
  if (!validation_loaded_) {
    auto loaded = LoadBatches(recipe_.validation_data(), device_);
    if (!loaded.ok()) return Annotate(loaded.status(), "validation_data");
    validation_ = *std::move(loaded);
    validation_loaded_ = true;
  }
  return &validation_;
}

absl::StatusOr<const std::vector<Batch>*> RunContext::Batches(const v1::DataRef& ref, const std::string& choice) {
  if (ref.path().empty()) return Validation(choice);
  ASSIGN_OR_RETURN(std::vector<Batch> batches, LoadBatches(ref, device_));
  other_batches_.push_back(std::move(batches));
  return &other_batches_.back();
}

absl::StatusOr<Dataset> RunContext::TrainingData(const v1::DataRef& ref) const {
  const bool own = !ref.path().empty();
  auto data = LoadDataset(SpecFromRef(own ? ref : recipe_.calibration_data()));
  if (!data.ok()) return Annotate(data.status(), own ? "training data" : "training data (the calibration data)");
  return data;
}

absl::StatusOr<std::vector<int64_t>> RunContext::InputShape() {
  ASSIGN_OR_RETURN(const std::vector<Batch>* data,
                   recipe_.calibration_data().path().empty() ? Evaluation() : Calibration());
  if (data->empty()) return absl::FailedPreconditionError("the data has no samples to take the input shape from");
  std::vector<int64_t> shape = data->front().inputs.sizes().vec();
  shape[0] = 1;
  return shape;
}

absl::StatusOr<std::vector<at::Tensor>> RunContext::CalibrationInputs(int n) {
  ASSIGN_OR_RETURN(const std::vector<Batch>* data, Calibration());
  std::vector<at::Tensor> inputs;
  for (size_t b = 0; b < Limit(n, data->size()); ++b) inputs.push_back((*data)[b].inputs);
  return inputs;
}

void RunContext::BeginStep(int index, std::string stage, v1::StepReport* part) {
  step_ = index;
  stage_ = std::move(stage);
  part_ = part;
}

absl::Status RunContext::Emit(qopt::Progress progress) {
  if (options_.on_progress) options_.on_progress(progress);
  return CheckCancelled();
}

absl::Status RunContext::Progress(double fraction, std::string message) {
  return Emit(qopt::Progress{step_, recipe_.steps_size(), stage_, fraction, std::move(message)});
}

absl::Status RunContext::CheckCancelled() const {
  if (options_.cancelled && options_.cancelled()) return absl::CancelledError("job cancelled");
  return absl::OkStatus();
}

std::string RunContext::FingerprintOf(int step) const {
  // What is trained, and how; not where this worker keeps the files (a service worker
  // names each input after its content's hash in a cache of its own) or which of its
  // devices and threads run it, so another worker resumes the same job.
  v1::Recipe recipe = recipe_;
  (void)EditRecipeFiles(&recipe, [](const std::string&, std::string* value) {
    *value = std::filesystem::path(*value).filename().string();
    return absl::OkStatus();
  });
  recipe.clear_device();
  recipe.clear_num_threads();
  recipe.clear_time_limit_seconds();
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    recipe.SerializeToCodedStream(&coded);
  }
  absl::StrAppend(&bytes, "#step", step);
  uint64_t h = 1469598103934665603ull;  // FNV-1a: tells runs apart, not a security check
  for (unsigned char c : bytes) h = (h ^ c) * 1099511628211ull;
  return absl::StrCat(absl::Hex(h, absl::kZeroPad16), "-", bytes.size());
}

bool RunContext::CheckpointOfLaterStep() const {
  if (options_.checkpoint_path.empty()) return false;
  absl::StatusOr<nlohmann::json> meta = ReadCheckpointMeta(options_.checkpoint_path);
  if (!meta.ok() || !meta->is_object()) return false;
  const std::string fingerprint = meta->value("fingerprint", "");
  for (int later = step_ + 1; later <= recipe_.steps_size(); ++later) {
    if (fingerprint == FingerprintOf(later)) return true;
  }
  return false;
}

absl::Status RunContext::Log(std::string line, Figures figures) {
  return Emit(qopt::Progress{step_, recipe_.steps_size(), stage_, 1.0, std::move(line), true, std::move(figures)});
}

absl::Status RunContext::LogRow(std::string line, v1::LayerRow row) {
  qopt::Progress p{step_, recipe_.steps_size(), stage_, 1.0, std::move(line), true};
  p.layer_row = std::make_shared<const v1::LayerRow>(std::move(row));
  return Emit(std::move(p));
}

absl::Status RunContext::Finish(const v1::StepReport& part) {
  qopt::Progress done{step_, recipe_.steps_size(), stage_, 1.0, "done"};
  done.step_report = std::make_shared<const v1::StepReport>(part);
  return Emit(std::move(done));
}

absl::Status RunContext::WriteArtifact(const std::string& name, const std::string& text) {
  RETURN_IF_ERROR(WriteText(staging_->Path(name), text));
  AddArtifact(name);
  return absl::OkStatus();
}

}  // namespace qopt
