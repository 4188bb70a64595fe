"""One training run from its parts: process group, datasets, model (fresh or resumed), validation, loop.

`train` and `finetune` differ only in the model they start from and their defaults; both end here.
A request that cannot start is a `UsageError` (exit 2), found before the datasets are read or the model is
loaded where it can be: an output folder (or its `.docsam/`, `checkpoints/`) that cannot be written, one
that already holds a run (without `--resume`), ranks in different working folders given relative paths, a
device or precision that is not available, a batch that does not split, a DATASET or `--val` that is no
dataset or has two classes the model reads alike, weights that cannot be found or do not load.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from docsam_cli.batch import check_written_folders, prepare_output_folder
from docsam_cli.batch_ranks import other_working_folder, working_folder
from docsam_cli.console import RUN_WIDE
from docsam_cli.distributed import Distributed, launched_rank, setup, teardown
from docsam_cli.errors import UsageError
from docsam_cli.folder_lock import created_by_locking, folder_lock, remove_unused_folder
from docsam_cli.inputs.images import set_max_image_pixels
from docsam_cli.names import display_path
from docsam_cli.precision import precision_dtype
from docsam_cli.presets import refuse_repeated_classes
from docsam_cli.runtime import fit_threads_to_cpus, keep_freed_memory
from docsam_cli.training.build import architecture_of
from docsam_cli.training.checkpoints import MODEL_FILE, checkpoint_root, list_checkpoints
from docsam_cli.training.data import MixedTrainingData
from docsam_cli.training.datasets import DatasetError, LayoutDataset, Stage
from docsam_cli.training.run_log import RUN_FILE, recorded_world_size
from docsam_cli.training.sampler import BatchLayout
from docsam_cli.training.settings import AugmentSettings, DatasetSpec, RunPlan, TrainingOptions
from docsam_cli.training.trainer import Trainer, on_main, other_process_count
from docsam_cli.training.validation import LayoutValidator
from docsam_cli.weights import WeightsError
from docsam_cli.writers.page_outputs import STATE_DIR
from model.checkpoint import CheckpointError
from model.docsam import DocSAM
from model.inference import Geometry

logger = logging.getLogger(__name__)


def training_data(plan: RunPlan) -> MixedTrainingData:
    """The mixed dataset of the run's DATASETs."""
    specs = plan.datasets
    datasets = [open_dataset(spec) for spec in specs]
    for dataset in datasets:
        dataset.check_files()  # a file missing is an error of the data (exit 1), not hours into the run
    return MixedTrainingData(
        datasets,
        plan.augmentation,
        plan.options.seed,
        weights=explicit_weights(specs),
        starts=[spec.start for spec in specs],
    )


def explicit_weights(specs: Sequence[DatasetSpec]) -> list[float] | None:
    """The DATASETs' `weight=`s, or None when none has one (the reference's rule). Raises UsageError when
    only some have one."""
    weights = [spec.weight for spec in specs]
    if all(weight is None for weight in weights):
        return None
    if any(weight is None for weight in weights):
        raise UsageError("give a weight to every dataset or to none (then the reference's rule applies)")
    return [weight for weight in weights if weight is not None]


def open_dataset(spec: DatasetSpec, stage: Stage = "train") -> LayoutDataset:
    """The dataset a DATASET (`stage` train) or `--val` (test) argument names; UsageError when it names
    none, InputError for a file of it that cannot be used (`LayoutDataset`)."""
    try:
        return LayoutDataset(spec.path, spec.name, stage)
    except DatasetError as error:
        raise UsageError(f"--val {error}" if stage == "test" else str(error)) from None


def refuse_classes_read_alike(datasets: Sequence[LayoutDataset]) -> None:
    """Refuse a dataset two of whose classes the text encoder reads alike (`refuse_repeated_classes`): its
    pages would prompt both with the same tokens and train (or validate) them against each other."""
    for dataset in datasets:
        classes = dataset.categories()  # a json that cannot be read is its own error (DatasetError)
        try:
            refuse_repeated_classes(classes, display_path(dataset.root))
        except ValueError as error:
            raise UsageError(f"{error}; rename or merge them with convert-dataset --map") from None


def warn_of_untrained_classes(training: Sequence[LayoutDataset], validation: Sequence[LayoutDataset]) -> None:
    """Warn of each `--val` split's classes that no training dataset has (names compared as the datasets
    store them): the run never trains the model to find them, yet validates it on them."""
    trained = {name for dataset in training for name in dataset.categories()}
    for dataset in validation:
        untrained = [name for name in dataset.categories() if name not in trained]
        if untrained:
            names = ", ".join(map(repr, untrained))
            found = f"class {names} is" if len(untrained) == 1 else f"classes {names} are"
            them = "it" if len(untrained) == 1 else "them"
            logger.warning(
                "--val %s: %s in no training dataset; the run does not train the model to find %s",
                display_path(dataset.root),
                found,
                them,
            )


def check_options(options: TrainingOptions, device: torch.device, world_size: int) -> None:
    """Refuse what the trainer would refuse, before datasets and model are loaded: fp16 off CUDA, a
    global batch that does not split into processes × accumulation steps, a warm-up as long as the run."""
    try:
        precision_dtype(options.precision, device)
    except ValueError as error:
        raise UsageError(f"--precision {options.precision}: {error}") from None
    try:
        BatchLayout(options.batch_size, world_size, options.accumulation)
    except ValueError as error:
        raise UsageError(f"--batch-size {options.batch_size}: {error}") from None
    if options.warmup and options.warmup >= options.iterations:
        raise UsageError(f"--warmup {options.warmup}: must be less than --iters ({options.iterations})")


def load_starting_model(starting_model: Callable[[], DocSAM]) -> DocSAM:
    """The command's starting model; weights that cannot be found or do not load are a usage error."""
    started = time.perf_counter()
    try:
        model = starting_model()
    except (WeightsError, CheckpointError) as error:
        raise UsageError(str(error)) from None
    logger.info("model ready in %.1f s", time.perf_counter() - started)
    return model


def validation_geometry(augmentation: AugmentSettings) -> Geometry:
    """The test-time geometry of the training augmentation: the mean short side (or the keep-size rule on
    the same range), the patch as the window."""
    if augmentation.keep_size:
        return Geometry(short_range=augmentation.short_range, patch=augmentation.patch, keep_size=True)
    short = sum(augmentation.short_range) // 2
    return Geometry(short_range=(short, short), patch=augmentation.patch)


def resume_point(plan: RunPlan, world_size: int, restarted: bool = False) -> Path | None:
    """The newest checkpoint to resume from (with `--resume`, or in a torchrun restart of a run that had
    started: `restarted`); refuses to start a new run over an existing one, and to resume one with another
    process count than `run.json` records (the trainer would refuse it once the datasets and the model are
    loaded), or without the run.json that its settings are checked against.

    `--resume` where there is no checkpoint yet starts the run from step 0, saying so: a job that a
    scheduler requeues (SLURM `--requeue`, a preemptible VM) runs the same command every time, and one
    killed before its first checkpoint was refused for good ('no checkpoint to resume from', exit 2)."""
    checkpoints = list_checkpoints(plan.output)
    out = display_path(plan.output)
    if checkpoints and (plan.resume or restarted):
        if plan.resume and not (plan.output / RUN_FILE).is_file():
            raise UsageError(
                f"--out {out}: holds checkpoints but no {RUN_FILE} to check the resumed run's settings "
                "against; start a new run in another --out"
            )
        had = recorded_world_size(plan.output)
        if had is not None and had != world_size:
            raise UsageError(other_process_count(checkpoints[-1], had, world_size))
        return checkpoints[-1]
    if checkpoints:
        raise UsageError(f"--out {out}: already holds a run: pass --resume to continue it, or another --out")
    if plan.resume:  # a warning, shown without -v: a mistyped --out starts a run too
        logger.warning(
            "--resume: --out %s holds no checkpoint yet; starting the run from step 0", out, extra=RUN_WIDE
        )
    return None


def run(plan: RunPlan, starting_model: Callable[[], DocSAM]) -> Path:
    """Train (every process of a torchrun launch calls this); returns the final weights' path. The run
    holds the run folder's lock (`folder_lock`; under torchrun rank 0 for all, a refusal stopping every
    rank with its line), so that a second run started into it (a command typed twice, a job launched
    again) is refused before it writes there."""
    keep_freed_memory()
    fit_threads_to_cpus()
    created = created_by_locking(plan.output)
    prepare_output_folder(plan.output)
    check_written_folders(plan.output, [plan.output / STATE_DIR, checkpoint_root(plan.output)])
    try:
        distributed = setup(plan.device)  # a device that is not there, a launcher's environment half set
        refuse_other_working_folders(plan, distributed)
        with contextlib.ExitStack() as locked:
            lock = folder_lock(plan.output, "docsam training run")
            on_main(distributed, lambda: locked.enter_context(lock))
            return _train(plan, starting_model, distributed)
    except UsageError:
        # A run that could not start leaves none of the folders it made behind. Every rank may have found
        # them missing: the main one alone tidies, the others would unlink the lock file it holds.
        if created is not None and launched_rank() == 0:
            remove_unused_folder(plan.output, created)
        raise
    finally:
        teardown()


def refuse_other_working_folders(plan: RunPlan, distributed: Distributed) -> None:
    """Under a launcher, stop every rank when some rank works in another folder than rank 0 and DATASET,
    `--val` or `--out` is a relative path: each rank reads them from its own working folder, and would
    train on another dataset of that name (or stop alone, finding none) and make its own run folder."""
    folders = distributed.gather(working_folder())
    elsewhere = [rank for rank, there in enumerate(folders) if there != folders[0]]
    relative = [
        name
        for name, paths in (
            ("DATASET", [spec.path for spec in plan.datasets]),
            ("--val", [spec.path for spec in plan.validation]),
            ("--out", [plan.output]),
        )
        if any(not path.is_absolute() for path in paths)
    ]
    if folders[0] is not None and elsewhere and relative:
        named = f"{', '.join(relative[:-1])} and {relative[-1]}" if len(relative) > 1 else relative[0]
        raise other_working_folder(elsewhere, folders[0], f"the paths of {named}")


def _train(plan: RunPlan, starting_model: Callable[[], DocSAM], distributed: Distributed) -> Path:
    """The run itself, once the run folder is this run's."""
    check_options(plan.options, distributed.device, distributed.world_size)
    checkpoint = resume_point(plan, distributed.world_size, restarted=_started_before(distributed))
    _mark_started(distributed)
    set_max_image_pixels(plan.options.max_image_pixels)  # of the pages trained and validated on
    data = training_data(plan)
    # Every process checks `--val` (its list only), though the main one alone validates: a bad one is then
    # the same usage error on each, not a rank left in the first collective with no peer.
    validation = [open_dataset(spec, "test") for spec in plan.validation]
    refuse_classes_read_alike([*data.datasets, *validation])
    if not distributed.is_main:
        validation = []
    warn_of_untrained_classes(data.datasets, validation)
    logger.info("training on %s, %s", distributed.device, plan.options.precision)
    torch.manual_seed(plan.options.seed)  # fresh initialisation (train) is part of the seeded run
    if checkpoint is not None:
        logger.info("resuming from %s", display_path(checkpoint), extra=RUN_WIDE)
    model = (
        load_starting_model(lambda: architecture_of(checkpoint / MODEL_FILE, plan.regularisation))
        if checkpoint is not None
        else load_starting_model(starting_model)
    )
    geometry = validation_geometry(plan.augmentation)
    validator = on_main(  # the main process alone validates; a bad page stops every process
        distributed,
        lambda: LayoutValidator(validation, geometry, plan.validation_images) if validation else None,
    )
    trainer = Trainer(model, data, plan.options, plan.output, distributed, validator)
    return trainer.run(checkpoint, plan.record)


# In the launcher's store, which torchrun keeps through its restarts (`--max-restarts`): set once the run
# has its folder, so that a restarted attempt (the same command) resumes the run from its newest checkpoint
# instead of refusing a folder that holds a run. Not per attempt, unlike the store's other keys.
_STARTED_KEY = "docsam/training-run-started"


def _started_before(distributed: Distributed) -> bool:
    """Whether an earlier attempt of this launch started the run (see `_STARTED_KEY`)."""
    return distributed.store is not None and distributed.store.check([_STARTED_KEY])


def _mark_started(distributed: Distributed) -> None:
    if distributed.store is not None:
        distributed.store.set(_STARTED_KEY, b"")
