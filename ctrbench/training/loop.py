"""The training loop: BCE-with-logits, Adam, early stopping on validation AUC, best epoch restored.

It follows FuxiCTR's BaseModel.fit (the code behind the BARS numbers), so BARS configs behave the
same here: after every epoch the validation metrics are computed; an epoch that does not beat the
best monitored value by 1e-6 multiplies every learning rate by `lr_decay_factor` (floored at
`min_learning_rate`) and counts towards `early_stop_patience`; the best epoch's weights are restored
before the test evaluation. Regularisation adds lambda / 2 * ||W||^2 over the embedding parameters
(`embedding_regularizer`) and over all other parameters (`net_regularizer`).

A loss or gradient norm that is not finite ends the run at once as "diverged" (the paper's LossX),
recording the step and the last finite loss. With `checkpoint_path`, the full training state is saved
atomically after every epoch and a later call resumes from it.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from ctrbench.core.console import console
from ctrbench.core.errors import CtrbenchError
from ctrbench.data.batches import Batch
from ctrbench.data.sources import BatchSource
from ctrbench.nn.embedding import FeatureEmbedding, embedding_parameters
from ctrbench.training.device import Precision
from ctrbench.training.metrics import evaluate


@dataclass
class TrainConfig:
    """Training hyperparameters. Defaults are the settings BARS configs share."""

    batch_size: int = 4096
    eval_batch_size: int = 16384
    epochs: int = 100
    optimizer: Literal["adam", "adagrad", "sgd"] = "adam"
    learning_rate: float = 1e-3
    embedding_learning_rate: float | None = None  # None: same as learning_rate
    embedding_regularizer: float = 0.0
    net_regularizer: float = 0.0
    early_stop_patience: int = 2
    reduce_lr_on_plateau: bool = True
    lr_decay_factor: float = 0.1
    min_learning_rate: float = 1e-6
    max_grad_norm: float | None = 10.0
    monitor: dict[str, float] = field(default_factory=lambda: {"auc": 1.0})
    shuffle: bool = True
    # bf16: forward passes (training and evaluation) under torch.autocast to bfloat16; weights,
    # gradients, optimizer state and the loss stay float32. On CPUs with AVX512-BF16 or AMX its
    # matmuls run several times faster than float32 ones.
    precision: Precision = "fp32"

    def __post_init__(self) -> None:
        for key in ("batch_size", "eval_batch_size", "epochs"):
            if getattr(self, key) < 1:
                raise CtrbenchError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        if self.learning_rate <= 0:
            raise CtrbenchError(f"train.learning_rate must be > 0, got {self.learning_rate}")
        unknown = set(self.monitor) - {"auc", "gauc", "logloss"}
        if unknown or not self.monitor:
            raise CtrbenchError(f"train.monitor: weights of 'auc', 'gauc' and/or 'logloss' (e.g. {{auc: 1, gauc: 1}} as BARS "
                                f"on its sequential datasets), got {self.monitor}")


@dataclass
class FitResult:
    """What one training run produced."""

    status: Literal["ok", "diverged"]
    valid: dict[str, float]
    test: dict[str, float]
    best_epoch: int
    epochs: int
    steps: int
    train_seconds: float
    samples_per_second: float
    history: list[dict[str, Any]]
    diverged: dict[str, Any] | None = None
    test_logits: torch.Tensor | None = None  # [test rows] float32, in row order (significance tests)


class Diverged(Exception):
    def __init__(self, step: int | None, last_finite_loss: float | None, what: str):
        super().__init__(f"{what} at step {step}")
        self.info = {"step": step, "last_finite_loss": last_finite_loss, "what": what}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    embedding = embedding_parameters(model)
    ids = set(map(id, embedding))
    dense = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    return embedding, dense


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    embedding, dense = _split_parameters(model)
    groups = [
        {"params": embedding, "lr": config.embedding_learning_rate or config.learning_rate},
        {"params": dense, "lr": config.learning_rate},
    ]
    groups = [g for g in groups if g["params"]]
    optimizers = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad, "sgd": torch.optim.SGD}
    return optimizers[config.optimizer](groups)


def regularization(model: nn.Module, config: TrainConfig) -> torch.Tensor | None:
    if not (config.embedding_regularizer or config.net_regularizer):
        return None
    embedding, dense = _split_parameters(model)
    total = None
    for params, weight in ((embedding, config.embedding_regularizer), (dense, config.net_regularizer)):
        if weight:
            term = weight / 2 * sum(p.pow(2).sum() for p in params)
            total = term if total is None else total + term
    return total


def autocast(precision: Precision, device: torch.device) -> torch.autocast:
    """The context a forward pass runs in for `TrainConfig.precision` (fp32: a no-op)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def train_step(model: nn.Module, batch: Batch, optimizer: torch.optim.Optimizer, config: TrainConfig,
               step: int, last_loss: float | None) -> float:
    """One optimisation step on `batch` (already on the model's device); returns the loss.

    A non-finite loss or gradient norm raises `Diverged` before the weights change; `step` and
    `last_loss` (the previous step's loss) go into its record.
    """
    with autocast(config.precision, batch.label.device):
        logits = model(batch)
    loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), batch.label)
    reg = regularization(model, config)
    total = loss if reg is None else loss + reg
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    loss_value = total.item()
    if not np.isfinite(loss_value):
        raise Diverged(step, last_loss, "non-finite loss")
    if config.max_grad_norm is not None:
        norm = nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    else:
        norm = nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    if not torch.isfinite(norm):  # checked before the step, so no weight is ever non-finite
        raise Diverged(step, loss_value, "non-finite gradient norm")
    optimizer.step()
    return loss_value


@torch.inference_mode()
def predict(model: nn.Module, source: BatchSource, batch_size: int, device: torch.device,
            precision: Precision = "fp32", group_column: int | None = None,
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Float32 logits, labels and (with `group_column`, a column of the categorical matrix) each row's
    group over a whole split, in order."""
    model.eval()
    logits, labels, groups = [], [], []
    for batch in source.batches(batch_size, shuffle=False):
        with autocast(precision, device):
            output = model(batch.to(device, non_blocking=True))  # asynchronous from pinned memory only
        logits.append(output.float().cpu())
        labels.append(batch.label)
        if group_column is not None:
            groups.append(batch.categorical[:, group_column])
    return torch.cat(logits), torch.cat(labels), torch.cat(groups) if groups else None


def evaluate_split(model: nn.Module, source: BatchSource, config: TrainConfig, device: torch.device,
                   group_column: int | None = None) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """The split's metrics (gAUC too with `group_column`) and the float32 logits and labels they came
    from, in row order."""
    logits, labels, groups = predict(model, source, config.eval_batch_size, device, config.precision, group_column)
    if not torch.isfinite(logits).all():
        raise Diverged(None, None, "non-finite predictions in evaluation")
    return evaluate(labels, logits, groups), logits, labels


def _frozen_state_names(model: nn.Module) -> set[str]:
    """State-dict entries training never changes: parameters with requires_grad=False and the frozen
    pretrained tables (the `frozen_*` buffers of `FeatureEmbedding`)."""
    names = {name for name, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}
    for prefix, module in model.named_modules():
        if isinstance(module, FeatureEmbedding):
            names.update(f"{prefix}.{name}" if prefix else name
                         for name, _ in module.named_buffers(recurse=False) if name.startswith("frozen_"))
    return names


def trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's state without the entries training never changes (a pretrained table can
    be most of a model's bytes); `load_trained_state` puts it back."""
    frozen = _frozen_state_names(model)
    state = model.state_dict()
    copied = type(state)((name, tensor.clone()) for name, tensor in state.items() if name not in frozen)
    copied._metadata = state._metadata  # module versions, read by load_state_dict
    return copied


def load_trained_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    wrong = (set(missing) - _frozen_state_names(model)) | set(unexpected)
    if wrong:
        raise RuntimeError(f"the saved best-epoch state does not fit the model: {sorted(wrong)}")


def _monitor_value(metrics: dict[str, float], weights: dict[str, float]) -> float:
    return sum(weights[name] * metrics[name] for name in weights)


class _Reporter:
    """A live progress bar on a terminal, one summary line per epoch everywhere."""

    def __init__(self, label: str, enabled: bool):
        self.label = label
        self.progress = None
        if enabled and console.is_terminal:
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), console=console, transient=True,
            )
            self.progress.start()
        self.task = None

    def epoch_start(self, epoch: int, steps: int) -> None:
        if self.progress is not None:
            self.task = self.progress.add_task(f"{self.label} epoch {epoch}", total=steps, stats="")

    def step(self, loss: float, samples_per_second: float) -> None:
        if self.task is not None:
            self.progress.update(self.task, advance=1, stats=f"loss {loss:.4f} {samples_per_second:,.0f} samples/s")

    def epoch_end(self, line: str) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        console.print(line, highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only there if saving stopped half-way


def _load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                     generator: torch.Generator) -> dict[str, Any]:
    """Restore the training state saved by `_save_checkpoint`; return the loop state."""
    fix = "delete it to start the run over, or give another checkpoint path"
    try:
        saved = torch.load(path, weights_only=False)
        loop, weights, optimizer_state = saved["loop"], saved["model"], saved["optimizer"]
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
    except Exception as exc:  # noqa: BLE001 - whatever is wrong with the file, the fix is the same
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CtrbenchError(f"{path}: not a training checkpoint ({reason}); {fix}") from exc
    try:
        model.load_state_dict(weights)
        optimizer.load_state_dict(optimizer_state)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CtrbenchError(f"{path}: saved by another model or config (its weights do not fit "
                            f"{type(model).__name__}); {fix}") from exc
    return loop


def fit(
    model: nn.Module,
    train: BatchSource,
    valid: BatchSource,
    test: BatchSource | None,
    config: TrainConfig,
    seed: int,
    device: torch.device | str = "cpu",
    label: str = "",
    progress: bool = True,
    checkpoint_path: Path | None = None,
    group_column: int | None = None,
) -> FitResult:
    """Train `model` on `train`, early-stop on `valid`, restore the best epoch, evaluate on `test`.
    `group_column`: the categorical column whose value groups rows for gAUC (the dataset's user), if any."""
    device = torch.device(device)
    model.to(device)
    optimizer = make_optimizer(model, config)
    generator = torch.Generator().manual_seed(seed)
    state = {"epoch": 0, "steps": 0, "best": -float("inf"), "best_epoch": 0, "bad_epochs": 0,
             "best_weights": None, "history": [], "train_seconds": 0.0, "samples": 0}
    if checkpoint_path is not None and checkpoint_path.is_file():
        state = _load_checkpoint(checkpoint_path, model, optimizer, generator)
        console.print(f"{label} resuming after epoch {state['epoch']} from {checkpoint_path}", highlight=False)

    reporter = _Reporter(label, progress)
    last_loss: float | None = None
    try:
        while state["epoch"] < config.epochs and state["bad_epochs"] < config.early_stop_patience:
            epoch = state["epoch"] + 1
            model.train()
            reporter.epoch_start(epoch, -(-train.num_rows // config.batch_size))
            epoch_loss, epoch_samples, started = 0.0, 0, time.perf_counter()
            for batch in train.batches(config.batch_size, shuffle=config.shuffle, generator=generator):
                batch = batch.to(device, non_blocking=True)  # asynchronous from pinned memory only
                state["steps"] += 1
                loss_value = train_step(model, batch, optimizer, config, state["steps"], last_loss)
                last_loss = loss_value
                epoch_loss += loss_value * len(batch)
                epoch_samples += len(batch)
                reporter.step(loss_value, epoch_samples / (time.perf_counter() - started))
            seconds = time.perf_counter() - started
            state["train_seconds"] += seconds
            state["samples"] += epoch_samples
            metrics, _, _ = evaluate_split(model, valid, config, device, group_column)
            value = _monitor_value(metrics, config.monitor)
            improved = value > state["best"] + 1e-6
            if improved:
                state.update(best=value, best_epoch=epoch, bad_epochs=0,
                             best_weights=trained_state(model))
            else:
                state["bad_epochs"] += 1
                if config.reduce_lr_on_plateau:
                    for group in optimizer.param_groups:
                        group["lr"] = max(group["lr"] * config.lr_decay_factor, config.min_learning_rate)
            record = {"epoch": epoch, "train_loss": epoch_loss / max(epoch_samples, 1),
                      "valid_auc": metrics["auc"], "valid_logloss": metrics["logloss"],
                      "seconds": seconds, "samples_per_second": epoch_samples / seconds}
            state["history"].append(record)
            state["epoch"] = epoch
            reporter.epoch_end(
                f"{label} epoch {epoch}: loss {record['train_loss']:.4f}  valid AUC {metrics['auc']:.4f} "
                f"logloss {metrics['logloss']:.4f}  {record['samples_per_second']:,.0f} samples/s"
                + ("  *best*" if improved else f"  lr {optimizer.param_groups[-1]['lr']:.1e}")
            )
            if checkpoint_path is not None:
                _save_checkpoint(checkpoint_path, {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(), "torch_rng": torch.get_rng_state(), "loop": state,
                })
        load_trained_state(model, state["best_weights"])
        valid_metrics, valid_logits, _ = evaluate_split(model, valid, config, device, group_column)
        if test is valid:  # `valid: test`: the same rows, evaluated once
            test_metrics, test_logits = valid_metrics, valid_logits
        else:
            test_metrics, test_logits, _ = (evaluate_split(model, test, config, device, group_column)
                                            if test is not None else ({}, None, None))
    except Diverged as exc:
        if exc.info["step"] is None:  # found in evaluation: after the last step taken
            exc.info.update(step=state["steps"], last_finite_loss=last_loss)
        return FitResult(status="diverged", valid={}, test={}, best_epoch=state["best_epoch"],
                         epochs=state["epoch"], steps=state["steps"], train_seconds=state["train_seconds"],
                         samples_per_second=state["samples"] / max(state["train_seconds"], 1e-9),
                         history=state["history"], diverged=exc.info)
    finally:
        reporter.close()
    return FitResult(
        status="ok", valid=valid_metrics, test=test_metrics, best_epoch=state["best_epoch"],
        epochs=state["epoch"], steps=state["steps"], train_seconds=state["train_seconds"],
        samples_per_second=state["samples"] / max(state["train_seconds"], 1e-9), history=state["history"],
        test_logits=test_logits,
    )

