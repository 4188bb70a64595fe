"""The training loop with resume, accumulation, mixed precision and DDP.

Per optimiser step, as the reference's train.py: forward the batch, criterion total, backward, AdamW step
(one parameter group, no clipping), then set the learning rate for the next step (the first step uses the
base rate). Added here:

* Gradient accumulation: the global batch is run as `accumulation` micro-batches per process, each loss
  divided by `accumulation`; DDP synchronises gradients on the last one only.
* bf16 / fp16 autocast of the network (fp16 on CUDA only, with a grad scaler; bf16 also on the CPU); the
  criterion runs in float32.
* Reproducibility: each micro-batch seeds torch from (seed, chunk index), so dropout, stochastic depth and
  the loss's jittered point grids depend only on which samples are run — not on the process count,
  restarts or data-loader workers (see `sampler`). A run resumed from a checkpoint therefore continues
  exactly as the uninterrupted run, and W processes × A accumulation steps equal one process with W·A.
* Losses are normalised per process like the reference (each process averages over its own matched pairs,
  DDP averages the gradients). Compared with one process running the whole global batch in one forward
  the result therefore differs slightly — so does the forward itself, since query selection pads queries
  across the images of a forward — while it equals one process with the same micro-batches.
* The run stops after exactly `iterations` steps (train.py runs one more when the epochs allow).
* A diverging run stops before its weights are updated with a non-finite loss (`Diverged`): the loss is
  checked before the optimiser step, and the decoder's inputs before it runs, since non-finite features or
  boxes far outside the page (learned proposals after a diverged step) make RoIAlign fail before any loss
  exists.
* SIGINT (Ctrl-C), SIGTERM (Slurm's time limit) and SIGHUP (the terminal closing) end the run after the
  current step, with a checkpoint written as the periodic ones are (`Interrupted`); a second signal ends it
  at once. Data-loader workers ignore them, so that a signal sent to the whole process group does not take
  the data away mid-step.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import torch
from torch import nn
from torch.utils.data import DataLoader

from docsam_cli.distributed import Distributed
from docsam_cli.errors import InputError, UsageError
from docsam_cli.folder_lock import drop_inherited_locks
from docsam_cli.inputs.images import max_image_pixels, set_max_image_pixels
from docsam_cli.interruption import STOP_SIGNALS, first_stop_taken
from docsam_cli.names import display_path
from docsam_cli.precision import Precision, network_autocast, precision_dtype
from docsam_cli.runtime import usable_cpus
from docsam_cli.training.checkpoints import (
    MODEL_FILE,
    TrainerState,
    capture_rng,
    discard_earlier_best,
    list_checkpoints,
    load_trainer_state,
    remove_leftovers,
    restore_rng,
    resumed_best,
    save_best,
    save_checkpoint,
    save_final,
    trained_with,
)
from docsam_cli.training.data import MixedTrainingData, TrainingBatch, collate, raise_failures, worker_death
from docsam_cli.training.progress import TrainingProgress
from docsam_cli.training.run_log import RunLog, write_run_file
from docsam_cli.training.sample_random import derive_seed
from docsam_cli.training.sampler import BatchLayout, TrainingSampler
from docsam_cli.training.settings import TrainingOptions
from model.checkpoint import load_weights, read_state_dict
from model.docsam import DocSAM
from model.loss import CriterionOutput, DocSAMCriterion
from model.optim import ReferenceLRSchedule, build_optimizer
from model.outputs import DocSAMOutput

logger = logging.getLogger(__name__)

# Validation: the trained (unwrapped) model in eval mode → metrics, higher is better. Given to the main
# process only.
Validator = Callable[[DocSAM], dict[str, float]]


class Diverged(ValueError):
    """The loss (or the network's features) became non-finite; the weights were not updated with it."""


class WorkerDied(ValueError):
    """A data-loader worker died (the out-of-memory killer, a signal); no checkpoint is written for it."""


class _DivergedFeatures(Exception):
    """Raised by `_check_decoder_inputs` inside the forward, turned into `Diverged` by the trainer."""


# How far outside the (padded) input a box given to the decoder may reach, in input sizes. Proposals are
# learned, so diverged weights give boxes of 1e10 pixels, for which RoIAlign tries to allocate its samples.
_BOX_REACH = 4


def _check_decoder_inputs(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
    """Forward pre-hook of the decoder: its features must be finite and its boxes within reach of the
    input, else the forward would fail (RoIAlign) or the loss be NaN. One host read."""
    inputs = inspect.signature(module.forward).bind(*args, **kwargs).arguments
    tensors = [value for value in inputs.values() if isinstance(value, torch.Tensor)]
    tensors += list(inputs["levels"])
    limit = _BOX_REACH * max(inputs["pixel_mask"].shape[-2:])
    checks = [torch.isfinite(value).all() for value in tensors if value.is_floating_point()]
    checks.append((inputs["boxes"].abs() <= limit).all())
    if not bool(torch.stack(checks).all()):
        raise _DivergedFeatures


class Interrupted(Exception):
    """SIGINT, SIGTERM or SIGHUP stopped the run after `step`, whose checkpoint was written."""

    def __init__(self, step: int) -> None:
        self.step = step
        super().__init__(f"interrupted at step {step}; checkpoint written, continue with --resume")


class MainFailed(ValueError):
    """The error line the main process stopped with (`on_main`), raised on the processes waiting for it."""


@dataclass(frozen=True)
class MainStopped:
    """What the main process sends the others when its part of `on_main` failed: the error line, and
    whether it was a usage error (a run folder locked by another run), which exits as one everywhere."""

    message: str
    usage: bool

    def error(self) -> Exception:
        return UsageError(self.message) if self.usage else MainFailed(self.message)


Result = TypeVar("Result")


def on_main(distributed: Distributed, action: Callable[[], Result]) -> Result | None:
    """`action()` on the main process (taking the run folder's lock, loading the validation pages,
    validating, writing a checkpoint, a log line, the best or the final weights), the others waiting for
    it; its result there, None on the others. A failure that is one error line (a file that cannot be read
    or written, a full disk, a bad dataset, a folder in use: what `execute` and the app report) stops every
    process with that line and exit code, rather than the others failing in their next collective with no
    peer left (`internal error: ... Connection closed by peer`)."""
    result, failure = None, None
    if distributed.is_main:
        try:
            result = action()
        except (ValueError, InputError, OSError, UsageError) as error:
            failure = error
    stopped = None if failure is None else MainStopped(str(failure), isinstance(failure, UsageError))
    stopped = distributed.from_main(stopped)
    if failure is not None:
        raise failure
    if stopped is not None:
        raise stopped.error()
    return result


def other_process_count(checkpoint: Path, had: int, has: int) -> str:
    """Why a run of `had` processes cannot be resumed from `checkpoint` by `has`."""
    return (
        f"{checkpoint}: the run had {had} processes, this one has {has}; resume it with as many "
        "(torchrun --nproc_per_node), so that its batches are drawn as before"
    )


class StopRequests:
    """While entered (in the main thread), SIGINT, SIGTERM and SIGHUP set `requested` instead of ending the
    process; the first one puts the previous handlers back, so that a second one acts as usual, but for a
    second SIGHUP (`first_stop_taken`). A signal the caller ignores (`nohup`'s SIGHUP) stays ignored."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            taken = [number for number in STOP_SIGNALS if signal.getsignal(number) != signal.SIG_IGN]
            self._previous = {number: signal.signal(number, self._request) for number in taken}
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _request(self, number: int, frame: FrameType | None) -> None:
        self.requested = True
        self._previous = first_stop_taken(number, self._previous)

    def _restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}


def init_loader_worker(worker: int, pixel_limit: int | None) -> None:
    """`worker_init_fn` of the data loader: the training process alone decides when to stop, and alone
    holds the run folder's lock. The worker decodes pages under the training process's `pixel_limit`
    (`--max-image-pixels`), which a worker started otherwise than by fork (spawn, Python 3.14's
    forkserver) would not inherit."""
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    drop_inherited_locks()
    set_max_image_pixels(pixel_limit)


def seed_chunk(seed: int, chunk: int) -> None:
    """Seed torch (all devices) for one micro-batch: its dropout masks and point jitter."""
    torch.manual_seed(derive_seed(seed, chunk) % 2**63)


def forward_loss(
    model: nn.Module, batch: TrainingBatch, criterion: DocSAMCriterion, precision: Precision = "fp32"
) -> tuple[DocSAMOutput, CriterionOutput]:
    """The network on a collated batch (autocast unless fp32), then the criterion in float32."""
    device = batch.pixel_values.device
    with network_autocast(device, precision_dtype(precision, device)):
        output = model(batch.pixel_values, batch.pixel_mask, batch.image_bboxes, batch.class_names)
    return output, criterion(output.stages, batch.targets)


def trainable_parameters(model: DocSAM, freeze_backbone: bool) -> list[nn.Parameter]:
    """All parameters in one AdamW group (as the reference), the backbone left out when frozen."""
    model.backbone.requires_grad_(not freeze_backbone)
    return [parameter for parameter in model.parameters() if parameter.requires_grad]


class Trainer:
    """Runs (or resumes) one training run into `output`. Rank 0 writes; every rank trains."""

    def __init__(
        self,
        model: DocSAM,
        data: MixedTrainingData,
        options: TrainingOptions,
        output: Path,
        distributed: Distributed | None = None,
        validator: Validator | None = None,
    ) -> None:
        self.distributed = distributed or Distributed()
        self.device = self.distributed.device
        precision_dtype(options.precision, self.device)  # refuses fp16 off CUDA before anything runs
        self.model = model.to(self.device)
        self.data = data
        self.stored = trained_with(data.datasets, data.augmentation)
        self.options = options
        self.output = Path(output)
        self.validator = validator
        self.layout = BatchLayout(options.batch_size, self.distributed.world_size, options.accumulation)
        self.criterion = DocSAMCriterion(model.config)  # loss weights and matcher costs of the model
        self.optimizer = build_optimizer(
            trainable_parameters(model, options.freeze_backbone), options.lr, options.weight_decay
        )
        self.schedule = ReferenceLRSchedule(
            self.optimizer, options.schedule, options.lr, options.iterations, options.warmup
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=options.precision == "fp16")
        self.best: dict | None = None

    # --- identity of the run ----------------------------------------------------------------------

    def run_identity(self) -> dict:
        """What a resumed run must share with the checkpoint for its data stream to continue."""
        return {
            "seed": self.options.seed,
            "batch_size": self.options.batch_size,
            "freeze_backbone": self.options.freeze_backbone,  # shapes the optimiser state
            "datasets": [[str(d.root.resolve()), d.name] for d in self.data.datasets],
            "weights": list(self.data.weights),
            "starts": list(self.data.starts),
            "processes": self.distributed.world_size,  # each draws its own share of every batch
            # The optimiser state is stored by parameter position: the same names in the same order.
            "parameters": [
                name for name, parameter in self.model.named_parameters() if parameter.requires_grad
            ],
        }

    def resume(self, checkpoint: Path) -> int:
        """Load weights and trainer state from a checkpoint folder; returns the completed step count."""
        state = load_trainer_state(checkpoint)
        identity = self.run_identity()
        recorded = {"processes": identity["processes"], **state.run}  # earlier versions kept no count
        changed = [key for key, value in identity.items() if recorded.get(key) != value]
        if "parameters" in changed:
            raise ValueError(
                f"{checkpoint}: its optimiser state belongs to another parameter layout (a run of an earlier "
                f"docsam version?); start a new run from its {MODEL_FILE} with `docsam finetune` instead"
            )
        if "processes" in changed:
            raise ValueError(other_process_count(checkpoint, recorded["processes"], identity["processes"]))
        if changed:
            raise ValueError(f"{checkpoint}: cannot resume with other {', '.join(changed)} than the run had")
        load_weights(self.model, read_state_dict(checkpoint / MODEL_FILE), str(checkpoint))
        self.optimizer.load_state_dict(state.optimizer)
        self.scaler.load_state_dict(state.scaler)
        restore_rng(state.rng)
        self.best = resumed_best(self.output, state, self.options.best_metric)
        return state.step

    # --- the loop ---------------------------------------------------------------------------------

    def run(self, resume: Path | None = None, record: Mapping[str, Any] | None = None) -> Path:
        """Train to `options.iterations`; returns the path of the final weights.

        `record` (the command and its option values, see `RunPlan.record`) goes to run.json when the run
        starts; a resumed run leaves run.json as it is."""
        options, main = self.options, self.distributed.is_main
        self.output.mkdir(parents=True, exist_ok=True)
        if main:
            remove_leftovers(self.output)  # before `resume` reads best/
            if resume is None:
                discard_earlier_best(self.output)
        start = self.resume(resume) if resume is not None else 0
        if start == 0 and options.warmup:
            self.schedule.step(0)

        def open_log() -> RunLog:
            if resume is None:  # a resumed run keeps the record it was started with
                write_run_file(self.output, record or {}, self.distributed.world_size, self.run_identity())
            return RunLog(self.output, start)

        log = on_main(self.distributed, open_log)  # the main process keeps the run's files
        network = self.distributed.wrap(self.model)
        self._set_mode(train=True)
        batches = self._batches(start)
        timer = (time.perf_counter(), start)
        try:
            with (
                StopRequests() as stop,
                TrainingProgress(options.iterations, start, main and options.progress) as progress,
            ):
                for step in range(start + 1, options.iterations + 1):
                    lr = self.optimizer.param_groups[0]["lr"]
                    loss = self._step(network, batches, step - 1)
                    if main:
                        progress.update(step, loss.item(), lr, self._speed(timer, step))
                    if step % options.log_every == 0 or step == options.iterations:
                        self._log_step(step, loss, lr, timer, log)
                        timer = (time.perf_counter(), step)
                    self._after_step(step, log, progress)
                    if step < options.iterations and self._any_process(stop.requested):
                        if step % options.checkpoint_every:
                            self._checkpoint(step)
                        raise Interrupted(step)
        except RuntimeError as error:  # torch's SIGCHLD handler raises it wherever the loop is
            death = worker_death(error)
            if death is None:
                raise
            raise self._worker_died(death) from error
        finally:
            batches.close()  # stops the loader's workers now: see `_batches`
            if log is not None:
                log.close()
        final = self.output / MODEL_FILE
        on_main(self.distributed, lambda: save_final(self.output, self.model, self.stored))
        return final

    def _log_step(
        self, step: int, loss: torch.Tensor, lr: float, timer: tuple[float, int], log: RunLog | None
    ) -> None:
        """Log `step`: its loss averaged over the processes, written by the main process (a line that
        cannot be written, a full disk, stops every process with its error)."""
        mean_loss = self.distributed.mean(loss).item()

        def write() -> None:
            speed = self._speed(timer, step)
            log.write({"step": step, "loss": mean_loss, "lr": lr, "it_s": speed})
            iterations = self.options.iterations
            logger.info("step %d/%d: loss %.4g, lr %.3g, %.2f it/s", step, iterations, mean_loss, lr, speed)

        on_main(self.distributed, write)

    def _batches(self, start: int) -> Generator[TrainingBatch, None, None]:
        """The training batches from `start`; to be closed once the run ends, as it does on any error. Left
        to Python's exit (an error's traceback holds them), the loader's workers, which ignore SIGTERM
        (`init_loader_worker`), are sent it and waited for forever: the run printed its error and hung."""
        sampler = TrainingSampler(
            len(self.data), self.layout, self.distributed.rank, self.options.seed, start_step=start
        )
        workers = loader_workers(self.options.workers)
        loader = DataLoader(
            self.data,
            batch_size=self.layout.micro_batch,
            sampler=sampler,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
            worker_init_fn=functools.partial(init_loader_worker, pixel_limit=max_image_pixels()),
        )
        return raise_failures(loader)

    def _step(self, network: nn.Module, batches: Iterator[TrainingBatch], step: int) -> torch.Tensor:
        """One optimiser step (0-based `step`) over `accumulation` micro-batches; returns this process's
        loss (the sum of the scaled micro-batch losses)."""
        accumulation = self.options.accumulation
        total = torch.zeros((), device=self.device)
        for micro_step in range(accumulation):
            batch = next(batches).to(self.device)
            seed_chunk(self.options.seed, self.layout.chunk(step, micro_step, self.distributed.rank))
            last = micro_step == accumulation - 1
            sync = contextlib.nullcontext() if last or not self.distributed.enabled else network.no_sync()
            with sync:
                scaled = self._forward(network, batch, step) / accumulation
                self.scaler.scale(scaled).backward()
            total += scaled.detach()
        self._check_finite(total, step)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step(step + 1)
        return total

    def _forward(self, network: nn.Module, batch: TrainingBatch, step: int) -> torch.Tensor:
        """The loss of one micro-batch; `Diverged` on every process when the decoder of any would get
        non-finite features (agreed before the backward, whose gradient exchange a process that stopped
        alone would leave the others waiting in)."""
        hook = self.model.decoder.register_forward_pre_hook(_check_decoder_inputs, with_kwargs=True)
        try:
            loss = forward_loss(network, batch, self.criterion, self.options.precision)[1].total
        except _DivergedFeatures:
            loss = None
        finally:
            hook.remove()
        if self._any_process(loss is None):
            raise self._diverged(math.nan, step)
        return loss

    def _check_finite(self, total: torch.Tensor, step: int) -> None:
        """Stop before the optimiser step when the loss (of any process) is not finite."""
        value = self.distributed.mean(total).item()
        if not math.isfinite(value):
            raise self._diverged(value, step)

    def _diverged(self, loss: float, step: int) -> Diverged:
        """The error for a non-finite loss at 0-based `step`: what to try, and how. `--resume` refuses another
        `--lr` (a run is its recorded settings), so the advice is a new run; a run folder without a
        checkpoint takes one itself."""
        checkpoints = list_checkpoints(self.output)
        if not checkpoints:
            return Diverged(
                f"loss is {loss} at step {step + 1}; the run has no checkpoint yet: start it again with a "
                "lower --lr"
            )
        last = display_path(checkpoints[-1])
        return Diverged(
            f"loss is {loss} at step {step + 1}; try a lower --lr in a new run, with another --out "
            f"(a resumed run keeps its --lr; last checkpoint: {last})"
        )

    def _worker_died(self, death: str) -> WorkerDied:
        """The error for a data-loader worker that died: the advice that works, `--resume` needing a
        checkpoint and refusing another `--batch-size`, a run folder without one taking a new run."""
        checkpoints = list_checkpoints(self.output)
        if not checkpoints:
            advice = (
                "the run has no checkpoint yet: start it again with fewer --workers or a smaller --batch-size"
            )
        else:
            last = display_path(checkpoints[-1])
            advice = f"continue the run from its last checkpoint ({last}) with --resume and fewer --workers"
        return WorkerDied(f"{death}; {advice}")

    def _after_step(self, step: int, log: RunLog | None, progress: TrainingProgress) -> None:
        options, last = self.options, step == self.options.iterations
        if options.validate_every and (step % options.validate_every == 0 or last):
            # Only the main process validates (it alone holds the validator); the others wait for it.
            def validate() -> None:
                if self.validator is not None:
                    self._validate(step, log, progress)

            on_main(self.distributed, validate)
        if step % options.checkpoint_every == 0 or last:
            self._checkpoint(step)

    def _checkpoint(self, step: int) -> None:
        """Write the checkpoint of completed step `step` (the main process; the others wait)."""

        def save() -> None:
            state = TrainerState(
                step=step,
                optimizer=self.optimizer.state_dict(),
                scaler=self.scaler.state_dict(),
                rng=capture_rng(),
                best=self.best,
                run=self.run_identity(),
            )
            save_checkpoint(self.output, self.model, state, self.options.keep_last, self.stored)

        on_main(self.distributed, save)

    def _any_process(self, flag: bool) -> bool:
        """Whether `flag` is set on any process (asked to stop: all then stop after the same step)."""
        if not self.distributed.enabled:
            return flag
        return self.distributed.mean(torch.tensor(float(flag), device=self.device)).item() > 0

    def _validate(self, step: int, log: RunLog | None, progress: TrainingProgress) -> None:
        self._set_mode(train=False)
        try:
            with torch.no_grad():
                metrics = self.validator(self.model)
        finally:
            self._set_mode(train=True)
        if log is not None:
            log.write({"step": step, "validation": metrics})
        progress.note(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        value = metrics.get(self.options.best_metric)
        if value is not None and (self.best is None or value > self.best["value"]):
            self.best = {"metric": self.options.best_metric, "value": value, "step": step}
            save_best(self.output, self.model, metrics, step, self.stored)

    def _set_mode(self, train: bool) -> None:
        """Train mode everywhere except a frozen backbone (no stochastic depth on fixed features)."""
        self.model.train(train)
        if self.options.freeze_backbone:
            self.model.backbone.eval()

    @staticmethod
    def _speed(timer: tuple[float, int], step: int) -> float:
        started, first = timer
        return (step - first) / max(time.perf_counter() - started, 1e-9)


def loader_workers(requested: int) -> int:
    """The data-loading processes to start for `--workers requested`: at most the CPU cores this process
    may use (`usable_cpus`: a Slurm allocation's, taskset's, a container's CPU quota), as torch's DataLoader
    advises (it warns, in lines of its own, above that): more would only compete for those cores. The
    samples drawn do not depend on the number of workers."""
    usable = usable_cpus()
    if requested <= usable:
        return requested
    noun = "process" if usable == 1 else "processes"
    logger.info(
        "--workers %d: %d data-loading %s, as many as the CPU cores this process may use",
        requested,
        usable,
        noun,
    )
    return usable
