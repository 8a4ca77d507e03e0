#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <memory>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "status.h"
#include "train/checkpoint.h"

namespace qopt {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

std::string StateKey(const at::Tensor& t) { return c10::guts::to_string(t.unsafeGetTensorImpl()); }

// Random crop after padding, and horizontal flips, per sample, from `gen`.
at::Tensor Augment(const at::Tensor& x, const TrainOptions& o, at::Generator& gen, double fill) {
  at::Tensor out = x;
  const int64_t n = x.size(0);
  if (o.random_crop_padding > 0) {
    const int64_t p = o.random_crop_padding, h = x.size(2), w = x.size(3);
    at::Tensor padded = at::constant_pad_nd(x, {p, p, p, p}, fill);
    at::Tensor offsets = at::randint(2 * p + 1, {n, 2}, gen, at::kLong);
    const int64_t* off = offsets.data_ptr<int64_t>();
    out = at::empty_like(x);
    for (int64_t i = 0; i < n; ++i) {
      out[i].copy_(padded[i].narrow(1, off[2 * i], h).narrow(2, off[2 * i + 1], w));
    }
  }
  if (o.horizontal_flip) {
    at::Tensor flip = at::rand({n}, gen, at::kFloat) < 0.5;
    out = at::where(flip.view({n, 1, 1, 1}), out.flip({3}), out);
  }
  return out;
}

at::Tensor Loss(const TrainOptions& o, const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& teacher) {
  at::Tensor labels_loss, distill_loss;
  // Integer labels (per sample or per pixel) are classes; float targets are values.
  if (o.loss != LossKind::kDistill) {
    labels_loss = labels.is_floating_point() ? at::mse_loss(logits, labels) : at::cross_entropy_loss(logits, labels);
  }
  if (o.loss != LossKind::kLabels) {
    // KL(teacher || student) of the softmaxes at temperature T, per sample, times T^2 so
    // its gradients keep their size as T changes (Hinton et al. 2015).
    const double t = o.temperature;
    at::Tensor student = at::log_softmax(logits / t, 1);
    at::Tensor target = at::log_softmax(teacher / t, 1);
    distill_loss = at::kl_div(student, target, at::Reduction::Sum, /*log_target=*/true) *
                   (t * t / static_cast<double>(logits.size(0)));
  }
  if (o.loss == LossKind::kLabels) return labels_loss;
  if (o.loss == LossKind::kDistill) return distill_loss;
  return labels_loss * (1.0 - o.distill_weight) + distill_loss * o.distill_weight;
}

std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(const TrainOptions& o, const std::vector<ParamGroup>& groups) {
  std::vector<torch::optim::OptimizerParamGroup> param_groups;
  for (const ParamGroup& g : groups) {
    std::vector<at::Tensor> tensors;
    for (const auto& [name, t] : g.tensors) tensors.push_back(t);
    if (o.optimizer == TrainOptions::Optimizer::kSgd) {
      param_groups.emplace_back(tensors, std::make_unique<torch::optim::SGDOptions>(
                                             torch::optim::SGDOptions(g.learning_rate)
                                                 .momentum(o.momentum)
                                                 .weight_decay(g.weight_decay)));
    } else {
      param_groups.emplace_back(tensors, std::make_unique<torch::optim::AdamOptions>(
                                             torch::optim::AdamOptions(g.learning_rate).weight_decay(g.weight_decay)));
    }
  }
  if (o.optimizer == TrainOptions::Optimizer::kSgd) {
    return std::make_unique<torch::optim::SGD>(param_groups, torch::optim::SGDOptions(1e-3));
  }
  return std::make_unique<torch::optim::Adam>(param_groups, torch::optim::AdamOptions(1e-3));
}

nlohmann::json RowJson(const EpochRow& r) {
  return {{"epoch", r.epoch}, {"loss", r.loss}, {"seconds", r.seconds},
          {"images_per_second", r.images_per_second}, {"figures", r.figures}};
}

// The learned tensors, the optimizer's state and the epochs so far.
Checkpoint Save(const TrainOptions& o, const std::vector<ParamGroup>& groups, torch::optim::Optimizer& opt,
                const std::vector<EpochRow>& rows) {
  Checkpoint c;
  c.meta["fingerprint"] = o.fingerprint;
  c.meta["epochs_done"] = rows.size();
  c.meta["history"] = nlohmann::json::array();
  for (const EpochRow& r : rows) c.meta["history"].push_back(RowJson(r));
  nlohmann::json steps = nlohmann::json::object();
  for (const ParamGroup& g : groups) {
    for (const auto& [name, t] : g.tensors) {
      const std::string key = g.name + "/" + name;
      c.tensors["param/" + key] = t.detach();
      auto it = opt.state().find(StateKey(t));
      if (it == opt.state().end()) continue;
      if (auto* sgd = dynamic_cast<torch::optim::SGDParamState*>(it->second.get())) {
        if (sgd->momentum_buffer().defined()) c.tensors["sgd/" + key] = sgd->momentum_buffer();
      } else if (auto* adam = dynamic_cast<torch::optim::AdamParamState*>(it->second.get())) {
        c.tensors["adam_avg/" + key] = adam->exp_avg();
        c.tensors["adam_sq/" + key] = adam->exp_avg_sq();
        steps[key] = adam->step();
      }
    }
  }
  c.meta["adam_steps"] = steps;
  return c;
}

// Puts a checkpoint's tensors and optimizer state in place; every tensor must be there
// with the shape the task has now.
absl::Status Restore(const Checkpoint& c, const std::vector<ParamGroup>& groups, torch::optim::Optimizer& opt) {
  auto take = [&](const std::string& name, const at::Tensor& like) -> absl::StatusOr<at::Tensor> {
    auto it = c.tensors.find(name);
    if (it == c.tensors.end()) return absl::InvalidArgumentError(absl::StrCat("checkpoint lacks ", name));
    if (it->second.sizes() != like.sizes() || it->second.scalar_type() != like.scalar_type()) {
      return absl::InvalidArgumentError(absl::StrCat("checkpoint's ", name, " does not match the model"));
    }
    return it->second.to(like.device());
  };
  at::NoGradGuard no_grad;
  const nlohmann::json& steps = c.meta.contains("adam_steps") ? c.meta["adam_steps"] : nlohmann::json::object();
  for (const ParamGroup& g : groups) {
    for (const auto& [name, t] : g.tensors) {
      const std::string key = g.name + "/" + name;
      ASSIGN_OR_RETURN(at::Tensor value, take("param/" + key, t));
      t.copy_(value);
      if (c.tensors.count("sgd/" + key)) {
        ASSIGN_OR_RETURN(at::Tensor buffer, take("sgd/" + key, t));
        auto state = std::make_unique<torch::optim::SGDParamState>();
        state->momentum_buffer(buffer);
        opt.state()[StateKey(t)] = std::move(state);
      } else if (c.tensors.count("adam_avg/" + key)) {
        ASSIGN_OR_RETURN(at::Tensor avg, take("adam_avg/" + key, t));
        ASSIGN_OR_RETURN(at::Tensor sq, take("adam_sq/" + key, t));
        if (!steps.contains(key) || !steps[key].is_number_integer()) {
          return absl::InvalidArgumentError(absl::StrCat("checkpoint lacks the Adam step count of ", key));
        }
        auto state = std::make_unique<torch::optim::AdamParamState>();
        state->step(steps[key].get<int64_t>());
        state->exp_avg(avg);
        state->exp_avg_sq(sq);
        opt.state()[StateKey(t)] = std::move(state);
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<EpochRow>> RowsFrom(const nlohmann::json& meta, int epochs) {
  std::vector<EpochRow> rows;
  try {
    const int done = meta.at("epochs_done").get<int>();
    if (done < 0 || done > epochs || meta.at("history").size() != static_cast<size_t>(done)) {
      return absl::InvalidArgumentError("checkpoint: epoch count out of range");
    }
    for (const auto& h : meta.at("history")) {
      EpochRow r;
      r.epoch = h.at("epoch").get<int>();
      r.loss = h.at("loss").get<double>();
      r.seconds = h.at("seconds").get<double>();
      r.images_per_second = h.at("images_per_second").get<double>();
      r.figures = h.at("figures").get<std::map<std::string, double>>();
      rows.push_back(std::move(r));
    }
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint: ", e.what()));
  }
  return rows;
}

}  // namespace

double ScheduledLearningRate(const TrainOptions& o, double base, double progress, int epoch) {
  switch (o.schedule) {
    case TrainOptions::Schedule::kCosine: return base * 0.5 * (1.0 + std::cos(M_PI * progress));
    case TrainOptions::Schedule::kStep: return base * std::pow(o.step_gamma, epoch / o.step_epochs);
    case TrainOptions::Schedule::kConstant: return base;
  }
  return base;
}

absl::StatusOr<TrainResult> Train(TrainingTask& task, const Dataset& data, const TrainOptions& o,
                                  const TrainCallbacks& cb) {
  const int64_t n = data.size();
  if (n == 0) return absl::InvalidArgumentError("training data is empty");
  if (o.loss != LossKind::kDistill && !data.labels) {
    return absl::InvalidArgumentError(
        "training data has no labels: give labels (labels_path, or a format that has them) or use loss 'distill'");
  }
  if ((o.random_crop_padding > 0 || o.horizontal_flip) && data.inputs.dim() != 4) {
    return absl::InvalidArgumentError(absl::StrCat("augmentation needs image inputs (N, C, H, W); the data is ",
                                                   data.inputs.dim(), "-dimensional"));
  }
  if ((o.random_crop_padding > 0 || o.horizontal_flip) && o.loss != LossKind::kDistill && data.labels &&
      data.labels->dim() > 1) {
    return absl::InvalidArgumentError(
        "augmentation moves the inputs but not per-pixel labels: set random_crop_padding 0 and horizontal_flip false");
  }
  const int64_t batch = std::min<int64_t>(o.batch_size, n);
  int64_t steps = (n + batch - 1) / batch;
  if (o.max_steps_per_epoch > 0) steps = std::min(steps, o.max_steps_per_epoch);
  const std::vector<ParamGroup>& groups = task.groups();
  std::unique_ptr<torch::optim::Optimizer> opt = MakeOptimizer(o, groups);

  TrainResult result;
  if (!o.checkpoint_path.empty()) {
    auto checkpoint = ReadCheckpoint(o.checkpoint_path);
    if (!checkpoint.ok() && !absl::IsNotFound(checkpoint.status())) return checkpoint.status();
    if (checkpoint.ok() && checkpoint->meta.value("fingerprint", "") == o.fingerprint) {
      ASSIGN_OR_RETURN(result.epochs, RowsFrom(checkpoint->meta, o.epochs));
      RETURN_IF_ERROR(Restore(*checkpoint, groups, *opt));
      result.resumed_epochs = static_cast<int>(result.epochs.size());
      if (cb.on_resume) RETURN_IF_ERROR(cb.on_resume(result.epochs));
      if (result.resumed_epochs == o.epochs) {
        // Nothing left to train: the task still has to see its final tensors.
        RETURN_IF_ERROR(task.EndEpoch(o.epochs).status());
        return result;
      }
    }
  }

  const at::Tensor& labels = data.labels ? *data.labels : at::Tensor();
  const double fill = (o.random_crop_padding > 0) ? data.inputs.min().item<double>() : 0.0;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  const double total_steps = static_cast<double>(o.epochs) * static_cast<double>(steps);
  const auto start = Clock::now();
  int64_t trained_steps = 0;
  c10::AutoGradMode enable_grad(true);
  for (int epoch = result.resumed_epochs; epoch < o.epochs; ++epoch) {
    // Each epoch's order and augmentation depend on the seed and the epoch only, so a
    // resumed run sees the batches an uninterrupted one would.
    gen.set_current_seed(o.seed * 1000003u + static_cast<uint64_t>(epoch));
    const at::Tensor order = at::randperm(n, gen, at::kLong);
    const auto epoch_start = Clock::now();
    double loss_sum = 0.0;
    int64_t seen = 0;
    for (int64_t step = 0; step < steps; ++step) {
      const at::Tensor idx = order.slice(0, step * batch, std::min(n, (step + 1) * batch));
      at::Tensor x = data.inputs.index_select(0, idx);
      if (o.random_crop_padding > 0 || o.horizontal_flip) x = Augment(x, o, gen, fill);
      x = x.to(o.device);
      const at::Tensor y = labels.defined() ? labels.index_select(0, idx).to(o.device) : at::Tensor();
      const double progress = (static_cast<double>(epoch) * steps + static_cast<double>(step)) / total_steps;
      for (size_t g = 0; g < groups.size(); ++g) {
        opt->param_groups()[g].options().set_lr(ScheduledLearningRate(o, groups[g].learning_rate, progress, epoch));
      }
      double value = 0.0;
      try {
        at::Tensor teacher;
        if (o.loss != LossKind::kLabels) {
          ASSIGN_OR_RETURN(teacher, task.Teacher(x));
        }
        ASSIGN_OR_RETURN(at::Tensor logits, task.Forward(x));
        if (logits.dim() != 2) {
          return absl::InvalidArgumentError(absl::StrCat(
              "training needs the model to output class scores (batch, classes); it outputs shape ",
              c10::str(logits.sizes())));
        }
        at::Tensor loss = Loss(o, logits, y, teacher);
        value = loss.item<double>();
        if (!std::isfinite(value)) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "loss is %s at epoch %d, step %d (learning rate %g): training diverged; lower learning_rate",
              std::isnan(value) ? "NaN" : "infinite", epoch + 1, step + 1,
              opt->param_groups()[0].options().get_lr()));
        }
        opt->zero_grad();
        loss.backward();
        opt->step();
        // A simulated model's output is on the grid, so its loss stays finite while its
        // weights run off to infinity: check them too, with one sync.
        at::Tensor total = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(o.device));
        for (const ParamGroup& g : groups) {
          for (const auto& [name, t] : g.tensors) total = total + t.detach().sum().to(at::kDouble);
        }
        const double sum = total.item<double>();
        if (!std::isfinite(sum)) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "the trained tensors are not finite after epoch %d, step %d (learning rate %g): training diverged; "
              "lower learning_rate",
              epoch + 1, step + 1, opt->param_groups()[0].options().get_lr()));
        }
      } catch (const c10::Error& e) {
        return absl::InvalidArgumentError(absl::StrCat("training step ", step + 1, " of epoch ", epoch + 1, ": ",
                                                       e.what_without_backtrace()));
      }
      task.AfterStep();
      loss_sum += value * static_cast<double>(idx.size(0));
      seen += idx.size(0);
      ++trained_steps;
      if (cb.on_iteration) {
        TrainProgress p;
        p.epoch = epoch + 1;
        p.epochs = o.epochs;
        p.step = step + 1;
        p.steps = steps;
        p.loss = loss_sum / static_cast<double>(seen);
        p.learning_rate = opt->param_groups()[0].options().get_lr();
        const double elapsed = Seconds(epoch_start);
        p.images_per_second = static_cast<double>(seen) / std::max(elapsed, 1e-9);
        const double per_step = Seconds(start) / static_cast<double>(trained_steps);
        const double left = total_steps - (static_cast<double>(epoch) * steps + static_cast<double>(step + 1));
        p.eta_seconds = per_step * left;
        RETURN_IF_ERROR(cb.on_iteration(p));
      }
    }
    EpochRow row;
    row.epoch = epoch + 1;
    row.loss = loss_sum / static_cast<double>(std::max<int64_t>(seen, 1));
    row.seconds = Seconds(epoch_start);
    row.images_per_second = static_cast<double>(seen) / std::max(row.seconds, 1e-9);
    {
      at::NoGradGuard no_grad;
      ASSIGN_OR_RETURN(row.figures, task.EndEpoch(epoch + 1));
    }
    result.epochs.push_back(row);
    if (cb.on_epoch) RETURN_IF_ERROR(cb.on_epoch(row));
    if (!o.checkpoint_path.empty()) {
      RETURN_IF_ERROR(WriteCheckpoint(o.checkpoint_path, Save(o, groups, *opt, result.epochs)));
      if (cb.on_checkpoint) cb.on_checkpoint();
    }
  }
  return result;
}

}  // namespace qopt
