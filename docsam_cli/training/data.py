"""Training samples from several datasets at once, and their collation, as the reference builds them.

Dataset choice follows the reference: each sample picks a dataset at random with probability
∝ sqrt(K_d / geometric mean of K) (K_d = categories of the dataset's first json) — or explicit weights —
ignoring which dataset the shuffled index came from; the image is `index mod len(dataset)`; the epoch length
is the largest dataset's size times the number of datasets. With a curriculum, a dataset takes part from
its start iteration on and the probabilities are renormalised over the datasets active at that step.

Unlike the reference, a sample that fails to load raises an error naming the file instead of silently
returning another random sample. In a data-loader worker that error is caught and carried to the training
process as a `FailedSample` (the DataLoader would re-raise it as a multi-line RuntimeError), which raises it
there again: the user sees the same one line with or without workers.
"""

from __future__ import annotations

import math
import re
import signal
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from docsam_cli.errors import InputError
from docsam_cli.training.annotations import AnnotationError
from docsam_cli.training.augment import Targets, augment, rasterise
from docsam_cli.training.datasets import DatasetError, LayoutDataset
from docsam_cli.training.sample_random import SampleRandom, SeededRandom
from docsam_cli.training.sampler import SampleKey
from docsam_cli.training.settings import AugmentSettings
from model.loss import ImageTargets


@dataclass
class TrainingSample:
    pixel_values: torch.Tensor  # (3, h, w) float32 BGR 0..255
    targets: Targets
    class_names: list[str]  # background prompt last
    source: str  # image path, for messages


@dataclass
class TrainingBatch:
    """A collated batch: inputs of `DocSAM.forward` plus one `ImageTargets` per image."""

    pixel_values: torch.Tensor  # (N, 3, H, W), zero-padded right/bottom
    pixel_mask: torch.Tensor  # (N, 1, H, W) float32, 1 = image pixel
    image_bboxes: torch.Tensor  # (N, 4) int64 [0, 0, w_i, h_i]
    targets: list[ImageTargets]
    sources: list[str]

    @property
    def class_names(self) -> list[list[str]]:
        return [target.class_names for target in self.targets]

    def to(self, device: torch.device | str) -> TrainingBatch:
        return self._map(lambda tensor: tensor.to(device, non_blocking=True))

    def pin_memory(self) -> TrainingBatch:
        """Called by the DataLoader (`pin_memory=True`) so that `to(cuda)` copies asynchronously."""
        return self._map(torch.Tensor.pin_memory)

    def _map(self, apply: Callable[[torch.Tensor], torch.Tensor]) -> TrainingBatch:
        return TrainingBatch(
            apply(self.pixel_values),
            apply(self.pixel_mask),
            apply(self.image_bboxes),
            [
                ImageTargets(
                    apply(target.instance_masks),
                    apply(target.instance_boxes),
                    apply(target.instance_labels),
                    apply(target.semantic_masks),
                    target.class_names,
                )
                for target in self.targets
            ],
            self.sources,
        )


# The errors of a dataset's files (an image, an annotation json), each one line naming the file.
SAMPLE_ERRORS = (InputError, DatasetError, AnnotationError)


@dataclass(frozen=True)
class FailedSample:
    """A sample whose files could not be used, in place of the sample: it crosses from a data-loader worker
    to the training process as plain values (an `InputError` does not survive pickling), and `reraise`
    raises the same error type with the same message there."""

    kind: type[Exception]
    arguments: tuple[Any, ...]

    @classmethod
    def of(cls, error: Exception) -> FailedSample:
        if isinstance(error, InputError):
            return cls(type(error), (error.path, error.reason, error.page))
        return cls(type(error), (str(error),))

    def reraise(self) -> NoReturn:
        raise self.kind(*self.arguments)


def raise_failures(
    batches: Iterable[TrainingBatch | FailedSample],
) -> Generator[TrainingBatch, None, None]:
    """The batches of a DataLoader over `MixedTrainingData`; a failed sample is raised here, in the
    training process."""
    for batch in batches:
        if isinstance(batch, FailedSample):
            batch.reraise()
        yield batch


# torch has no exception type of its own for a data-loader worker that died (killed by the kernel's
# out-of-memory killer, a signal, or exiting): it raises a bare RuntimeError, with one of these messages
# (torch 2.x; the first from its SIGCHLD handler, torch/csrc/DataLoader.cpp, often the cause of the third,
# raised by `_try_get_data` in torch/utils/data/dataloader.py):
#   "DataLoader worker (pid 1234) is killed by signal: Killed. "  (the signal's strsignal(3) text)
#   "DataLoader worker (pid 1234) exited unexpectedly with exit code 1. Details are lost ..."
#   "DataLoader worker (pid(s) 1234, 1235) exited unexpectedly"
_WORKER_KILLED = re.compile(r"DataLoader worker \(pid \d+\) is killed by signal: (?P<name>[^.]+)\.")
_WORKER_EXITED = re.compile(
    r"DataLoader worker \(pid \d+\) exited unexpectedly with exit code (?P<code>-?\d+)"
)
_WORKER_GONE = re.compile(r"DataLoader worker \(pid\(s\) [\d, ]+\) exited unexpectedly")


def worker_death(error: BaseException) -> str | None:
    """What ended a data-loader worker, as a clause (`a data-loader worker was killed (signal 9: Killed),
    most likely by the system for want of memory`), when `error` (or an error it was raised from) is torch's
    report of one; else None."""
    chain: list[str] = []
    cause: BaseException | None = error
    while cause is not None and len(chain) < 8:
        chain.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    for text in chain:
        if killed := _WORKER_KILLED.search(text):
            return _killed_worker(killed["name"])
        if exited := _WORKER_EXITED.search(text):
            return f"a data-loader worker exited unexpectedly (exit code {exited['code']})"
    if any(_WORKER_GONE.search(text) for text in chain):
        return "a data-loader worker ended unexpectedly"
    return None


def _killed_worker(name: str) -> str:
    numbers = {signal.strsignal(number): number for number in signal.valid_signals()}
    number = numbers.get(name)
    if number is None:
        return f"a data-loader worker was killed (signal: {name})"
    death = f"a data-loader worker was killed (signal {int(number)}: {name})"
    return f"{death}, most likely by the system for want of memory" if number == signal.SIGKILL else death


def reference_weights(category_counts: Sequence[int]) -> list[float]:
    """Unnormalised sampling weights sqrt(K_d / geometric mean of K); K = 0 counts as 1.

    This arithmetic (and normalising once, in `MixedTrainingData.probabilities`) gives the reference's
    probabilities bit for bit."""
    counts = [max(count, 1) for count in category_counts]
    geometric_mean = math.prod(counts) ** (1 / len(counts))
    return [math.sqrt(count / geometric_mean) for count in counts]


class MixedTrainingData(Dataset[TrainingSample]):
    """Map-style dataset over `SampleKey`s (see `sampler.TrainingSampler`)."""

    def __init__(
        self,
        datasets: Sequence[LayoutDataset],
        augmentation: AugmentSettings,
        seed: int,
        weights: Sequence[float] | None = None,
        starts: Sequence[int] | None = None,
    ) -> None:
        if not datasets:
            raise ValueError("no training datasets")
        self.datasets = list(datasets)
        self.augmentation = augmentation
        self.seed = seed
        self.weights = (
            list(weights)
            if weights is not None
            else reference_weights([d.category_count() for d in self.datasets])
        )
        self.starts = list(starts) if starts is not None else [0] * len(self.datasets)
        if len(self.weights) != len(self.datasets) or len(self.starts) != len(self.datasets):
            raise ValueError("need one weight and one start per dataset")
        if min(self.starts) != 0:
            raise ValueError("at least one dataset must be active from the first iteration")

    def __len__(self) -> int:
        return max(len(dataset) for dataset in self.datasets) * len(self.datasets)

    def probabilities(self, step: int) -> list[float]:
        """Sampling probabilities at optimiser step `step` (0 for datasets not started yet)."""
        active = [
            weight if start <= step else 0.0 for weight, start in zip(self.weights, self.starts, strict=True)
        ]
        return [weight / sum(active) for weight in active]

    def __getitem__(self, key: SampleKey) -> TrainingSample | FailedSample:
        """The sample, or a `FailedSample` for `raise_failures` to raise in the training process."""
        try:
            return self.sample(key.index, SeededRandom(self.seed, key.position), key.step)
        except SAMPLE_ERRORS as error:
            return FailedSample.of(error)

    def sample(self, index: int, rng: SampleRandom, step: int = 0) -> TrainingSample:
        """Pick a dataset, load image `index mod len`, augment and rasterise (the reference's draw order)."""
        dataset = self.datasets[rng.choice(self.probabilities(step))]
        image_index = index % len(dataset)
        image, page = dataset.load(image_index)
        pixels = torch.from_numpy(image).permute(2, 0, 1).float()
        pixels, instances = augment(pixels, page.instances, rng, self.augmentation)
        class_names = dataset.class_names(page)
        targets = rasterise(instances, len(class_names), (pixels.shape[1], pixels.shape[2]))
        return TrainingSample(pixels.contiguous(), targets, class_names, str(dataset.image_path(image_index)))


def collate(samples: Sequence[TrainingSample | FailedSample]) -> TrainingBatch | FailedSample:
    """Zero-pad images, pixel masks and GT masks right/bottom to the batch's largest size; a batch with a
    failed sample is that failure."""
    failed = next((sample for sample in samples if isinstance(sample, FailedSample)), None)
    if failed is not None:
        return failed
    height = max(sample.pixel_values.shape[1] for sample in samples)
    width = max(sample.pixel_values.shape[2] for sample in samples)

    def pad(tensor: torch.Tensor) -> torch.Tensor:
        return F.pad(tensor, (0, width - tensor.shape[-1], 0, height - tensor.shape[-2]))

    targets = [
        ImageTargets(
            instance_masks=pad(sample.targets.instance_masks),
            instance_boxes=sample.targets.instance_boxes,
            instance_labels=sample.targets.instance_labels,
            semantic_masks=pad(sample.targets.semantic_masks),
            class_names=sample.class_names,
        )
        for sample in samples
    ]
    sizes = [(sample.pixel_values.shape[1], sample.pixel_values.shape[2]) for sample in samples]
    return TrainingBatch(
        pixel_values=torch.stack([pad(sample.pixel_values) for sample in samples]),
        pixel_mask=torch.stack([pad(torch.ones(1, h, w)) for h, w in sizes]),
        image_bboxes=torch.tensor([[0, 0, w, h] for h, w in sizes], dtype=torch.int64),
        targets=targets,
        sources=[sample.source for sample in samples],
    )
