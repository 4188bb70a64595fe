"""torch.distributed as a launcher sets it up: one process per device, each told its place by environment.

torchrun (or `srun`, or any launcher that exports `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and
`MASTER_PORT`) starts the same command once per device; every process joins the process group here and
works on device `LOCAL_RANK` of its machine:

    torchrun --nproc_per_node 8 -m docsam_cli train ...
    torchrun --nnodes 2 --rdzv-backend c10d --rdzv-endpoint HOST:PORT --nproc_per_node 8 -m docsam_cli ...

Without a launcher's environment (`WORLD_SIZE` unset or 1) a command runs in its own process only. Shared
by `docsam train`/`finetune` (DDP over a process group) and `docsam segment` (a work queue in the launcher's
store, whose processes may share GPUs and exchange their few messages through that store, with no process
group: `setup(share_gpus=True, process_group=False)`).
"""

from __future__ import annotations

import itertools
import os
import pickle
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from docsam_cli.errors import UsageError
from docsam_cli.runtime import pick_device

if TYPE_CHECKING:  # torch is imported when a process group is joined: asking `launched_world_size` is free
    import torch
    from torch import nn
    from torch.distributed import Store

DEFAULT_TIMEOUT = timedelta(hours=1)  # a collective waits this long for its slowest process
STORE_POLL_SECONDS = 0.2  # how often a process waiting on the store looks for its key, or a failed rank
# A process that reports its failure waits this long at most for the others to read it: under srun the
# store lives in rank 0's process, and goes when it exits.
FAILURE_LINGER_SECONDS = 5.0
# Without a process group every process counts beats in the store, this often, so that the others can tell
# a process that was killed (out of memory, SIGKILL) from a slow one: under a plain srun nothing else would
# stop a run whose process died, and the others would wait for it until `timeout`, hours.
HEARTBEAT_SECONDS = 5.0
SILENCE_LIMIT_SECONDS = 120.0  # an awaited process without a beat this long is taken to be gone
STOP_WAIT_SECONDS = 30.0  # how long a process that ends waits for its heartbeat thread's last beat


_START_WITH_A_LAUNCHER = (
    "start the command with torchrun (or a launcher that also sets RANK, LOCAL_RANK, MASTER_ADDR and "
    "MASTER_PORT), or unset WORLD_SIZE"
)


def launched_world_size() -> int:
    """How many processes the launcher started (1 without a launcher); UsageError when `WORLD_SIZE` is not
    a whole number."""
    return _whole_number_in("WORLD_SIZE", "1", "a number of processes", _START_WITH_A_LAUNCHER)


def launched_rank() -> int:
    """This process's rank among those the launcher started (0 without a launcher); UsageError when `RANK`
    is not a whole number."""
    remedy = "start the command with torchrun (which sets it), or unset RANK"
    return _whole_number_in("RANK", "0", "a process's rank", remedy)


def _whole_number_in(name: str, default: str, meaning: str, remedy: str) -> int:
    """The whole number the environment variable `name` holds (`default` where it is unset); UsageError
    `NAME is 'x', not MEANING: REMEDY` where it holds something else."""
    value = os.environ.get(name, default)
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{name} is {value!r}, not {meaning}: {remedy}") from None


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run. `store` is the key-value store every process of the run shares
    (the launcher's), None when running alone."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: pick_device("cpu"))
    store: Store | None = None
    # Without a process group, `gather` and `from_main` go through `store` (keys numbered per call, in the
    # same order on every process), and a process that stops says so there (`report_failure`), so that
    # the others stop instead of waiting for it; one killed outright is known by its silence (`heartbeat`,
    # started by `setup`). `barrier`, `mean` and `wrap` need a process group.
    process_group: bool = True
    timeout: timedelta = DEFAULT_TIMEOUT
    heartbeat: Heartbeat | None = field(default=None, compare=False, repr=False)  # this process's beats
    _exchanges: Iterator[int] = field(default_factory=itertools.count, compare=False, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """Average a tensor over the processes (every process gets the result)."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        value = value.detach().clone()
        dist.all_reduce(value)
        return value / self.world_size

    def gather(self, value: Any) -> list[Any]:
        """Every process's `value` (any picklable object), in rank order, on every process."""
        if not self.enabled:
            return [value]
        if not self.process_group:
            key = self._exchange_key()
            self.store.set(f"{key}/{self.rank}", pickle.dumps(value))
            gathered = [pickle.loads(self._get(f"{key}/{rank}", rank)) for rank in range(self.world_size)]
            self._all_read(key)
            return gathered
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def from_main(self, value: Any) -> Any:
        """The main process's `value` (any picklable object) on every process; the others pass None."""
        if not self.enabled:
            return value
        if not self.process_group:
            key = self._exchange_key()
            if self.is_main:
                self.store.set(key, pickle.dumps(value))
            else:
                value = pickle.loads(self._get(key, 0))
            self._all_read(key)
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def report_failure(self, message: str) -> None:
        """Tell the other processes that this one stops (the first report stands); they stop at their next
        exchange instead of waiting for it. Best effort: the store may be gone already."""
        if self.enabled and not self.process_group:
            self._report(f"rank {self.rank} stopped the run: {message}")

    def close(self) -> None:
        """Stop this process's beats: before it exits, so that no thread uses the store while the
        interpreter shuts down."""
        if self.heartbeat is not None:
            self.heartbeat.stop()

    def _report(self, report: str) -> None:
        """Store `report` as the run's failure unless another is there; if it is the first, wait
        (`FAILURE_LINGER_SECONDS` at most) for the others to read it, or to stop on their own.

        The wait ends quietly if the launcher stops this process meanwhile (torchrun does, with SIGTERM,
        once another process has exited: one that failed for the same reason, weights missing on every
        rank): this process stops with its own reason, not as interrupted."""
        failure = self._failure_key()
        others = [f"{failure}/read/{rank}" for rank in range(self.world_size) if rank != self.rank]
        try:
            if self.store.compare_set(failure, "", report).decode() != report:
                # Another report came first: this process stops too, the first need not wait for it.
                self.store.set(f"{failure}/read/{self.rank}", b"")
                return
            deadline = time.monotonic() + FAILURE_LINGER_SECONDS
            while not self.store.check(others) and time.monotonic() < deadline:
                time.sleep(STORE_POLL_SECONDS)
        except KeyboardInterrupt:  # the launcher ends the run (SIGTERM as Ctrl-C): it is failing anyway
            return
        except Exception:  # the store is gone: the run is failing anyway
            return

    def _get(self, key: str, sender: int) -> bytes:
        """The value of `key` once process `sender` has set it. UsageError, repeating its message, if a
        process reported a failure meanwhile; if `sender` gave no sign of life for `SILENCE_LIMIT_SECONDS`
        (reported as the run's failure, so that every process stops); or after `timeout`."""
        deadline = time.monotonic() + self.timeout.total_seconds()
        failure = self._failure_key()
        silence = Silence(self.store, beats_key(sender))
        # `check` rather than a blocking `wait`: a TCP store's `wait` that times out logs a warning each time.
        while not self.store.check([key]):
            if self.store.check([failure]):
                self.store.set(f"{failure}/read/{self.rank}", b"")
                raise UsageError(self.store.get(failure).decode())
            if silence.seconds() > SILENCE_LIMIT_SECONDS:
                self._report(
                    f"rank {sender} stopped answering: no sign of life for {SILENCE_LIMIT_SECONDS:.0f} s "
                    "(killed, or out of memory?); a rerun does the pages left"
                )
                continue  # stop with the first report: this one, or another process's
            if time.monotonic() > deadline:
                raise UsageError(f"no word from the other processes of the run in {self.timeout}")
            time.sleep(STORE_POLL_SECONDS)
        return self.store.get(key)

    def _exchange_key(self) -> str:
        return f"{_attempt()}/exchange-{next(self._exchanges)}"

    def _failure_key(self) -> str:
        return f"{_attempt()}/failed"

    def _all_read(self, key: str) -> None:
        """Wait until every process has read `key`'s values: the store may live in the main process
        (`srun`), which must not exit while the others still read."""
        self.store.set(f"{key}/read/{self.rank}", b"")
        if self.is_main:
            for rank in range(self.world_size):
                self._get(f"{key}/read/{rank}", rank)

    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP with `find_unused_parameters`: the text encoder runs under no_grad, the FPN and a few decoder
        parameters never take part in the loss (the reference needs the flag for the same reason)."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)


def _attempt() -> str:
    # torchrun keeps its store through restarts (`--max-restarts`): each attempt has its own keys.
    return f"docsam/attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"


def beats_key(rank: int) -> str:
    """The store's counter of process `rank`'s beats."""
    return f"{_attempt()}/beats/{rank}"


class Heartbeat:
    """A thread that adds 1 to this process's counter in the store at once and then every
    `HEARTBEAT_SECONDS`, until `stop`."""

    def __init__(self, store: Store, key: str) -> None:
        self._store, self._key = store, key
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="docsam-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating and wait for the thread (bounded: a store that no longer answers must not keep the
        process from exiting)."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=STOP_WAIT_SECONDS)

    def _beat(self) -> None:
        while True:
            try:
                self._store.add(self._key, 1)
            except Exception:  # the store is gone: the run is ending
                return
            if self._stopped.wait(HEARTBEAT_SECONDS):
                return


class Silence:
    """How long the counter at `key` has not moved, as this process sees it (the processes' clocks are
    never compared); the counter is read at most once per `HEARTBEAT_SECONDS`."""

    def __init__(self, store: Store, key: str) -> None:
        self._store, self._key = store, key
        self._beats: int | None = None
        self._heard = self._read = time.monotonic()

    def seconds(self) -> float:
        now = time.monotonic()
        if now - self._read >= HEARTBEAT_SECONDS:
            self._read = now
            beats = self._store.add(self._key, 0)
            if beats != self._beats:
                self._beats, self._heard = beats, now
        return now - self._heard


def setup(
    device: str = "auto",
    timeout: timedelta = DEFAULT_TIMEOUT,
    share_gpus: bool = False,
    process_group: bool = True,
) -> Distributed:
    """Join the run the launcher describes (its store, and a process group unless `process_group` is
    False), or run alone; pick this process's device.

    `device` is checked as `docsam_cli.runtime.pick_device` checks it (UsageError if it is not there);
    `cuda` without an index, or `auto` on a machine with CUDA, is GPU `LOCAL_RANK` under a launcher, or
    with `share_gpus` GPU `LOCAL_RANK mod GPUs`: several processes per GPU, for work whose processes only
    exchange small messages (NCCL refuses two processes on one GPU). The process group is NCCL's on CUDA,
    gloo's on the CPU. Without one, no collective threads outlive the work: gloo's can abort a process
    that exits right after a collective (a worker thread then frees the collective's tensors, which needs
    the interpreter that is shutting down).
    """
    import torch
    import torch.distributed as dist

    world_size = launched_world_size()
    chosen = pick_device(device)
    if chosen.type == "cuda" and chosen.index is None:
        chosen = pick_device(f"cuda:{_launched_gpu(world_size, share_gpus)}")
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if world_size == 1:
        return Distributed(device=chosen)
    store, rank, world_size = _rendezvous(world_size, timeout)
    if not process_group:
        heartbeat = Heartbeat(store, beats_key(rank)).start()
        return Distributed(
            rank, world_size, chosen, store, process_group=False, timeout=timeout, heartbeat=heartbeat
        )
    # torchrun keeps one store for all its restarts (`--max-restarts`): the process group's keys are kept
    # apart per attempt, or a restarted process could read the address of a process that died.
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group(
        "nccl" if chosen.type == "cuda" else "gloo",
        store=dist.PrefixStore(f"default_pg/attempt-{attempt}", store),
        rank=rank,
        world_size=world_size,
        timeout=timeout,
    )
    return Distributed(dist.get_rank(), dist.get_world_size(), chosen, store)


def _rendezvous(world_size: int, timeout: timedelta) -> tuple[Store, int, int]:
    """The launcher's store, this process's rank and the run's size. UsageError when `WORLD_SIZE` is set
    without the rest of a launcher's environment (a job script that exports it, a command started without
    torchrun): the run cannot start."""
    import torch.distributed as dist

    _refuse_launcher_numbers_that_are_not(world_size)
    try:
        return next(dist.rendezvous("env://", timeout=timeout))
    except ValueError as error:  # torch's "Error initializing ... rendezvous: environment variable ..."
        reason = str(error).rpartition("rendezvous: ")[2]
        raise UsageError(
            f"WORLD_SIZE is {world_size}, yet the launcher's environment is incomplete ({reason}): "
            f"{_START_WITH_A_LAUNCHER}"
        ) from None


def _refuse_launcher_numbers_that_are_not(world_size: int) -> None:
    """UsageError naming the launcher's variable that should hold a whole number and does not
    (`MASTER_PORT=x`), which torch's rendezvous reported without its name ('invalid literal for int() with
    base 10: 'x'')."""
    for name in ("RANK", "LOCAL_RANK", "MASTER_PORT"):
        value = os.environ.get(name)
        try:
            int(value or "0")
        except ValueError:
            raise UsageError(
                f"WORLD_SIZE is {world_size}, yet {name} is {value!r}, not a whole number: "
                f"{_START_WITH_A_LAUNCHER}"
            ) from None


def _launched_gpu(world_size: int, share_gpus: bool) -> int:
    """This process's GPU index: `LOCAL_RANK` under a launcher (refused by `pick_device` if the machine has
    fewer GPUs, unless `share_gpus` spreads the processes over them), else the current device."""
    import torch

    if world_size == 1:
        return torch.cuda.current_device()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return local_rank % torch.cuda.device_count() if share_gpus else local_rank


def teardown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
