"""What every model-running command shares: which model on which device, loading it, and the page geometry.

Importing this module is cheap: commands describe the model (`ModelSpec`) and the geometry
(`GeometryOptions`) while parsing their options, and torch and the network are imported only when a model
is loaded or a geometry resolved.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from docsam_cli.errors import UsageError
from docsam_cli.names import display_path

if TYPE_CHECKING:
    import torch

    from docsam_cli.weights import ResolvedWeights
    from model import DocSAM
    from model.config import DocSAMConfig
    from model.inference import Geometry

logger = logging.getLogger(__name__)

DEVICE_HELP = "auto (the first CUDA device if there is one, else the CPU), cpu, cuda or cuda:N"
_DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")


MAX_SIDE = 32768  # pixels: a resized page, window or stride (a 32768² float page alone is 12 GiB)


def parse_size(text: str | None, option: str) -> tuple[int, int] | None:
    """`640` or `640,800` → (640, 640) or (640, 800): a size H,W, or a range LOW,HIGH; None stays None.

    Raises ValueError naming the option."""
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    if len(parts) not in (1, 2) or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise ValueError(f"{option} takes N or A,B (positive integers), got {text!r}")
    values = [int(part) for part in parts]
    if max(values) > MAX_SIDE:  # a larger side would not fit in memory: refused, not tried for minutes
        raise ValueError(f"{option} values must be at most {MAX_SIDE}, got {text!r}")
    return (values[0], values[-1])


def leaves_gaps(window: tuple[int, int], stride: tuple[int, int]) -> bool:
    """Whether windows of `window` (H, W) at `stride` leave pixels between them that no window sees."""
    return stride[0] > window[0] or stride[1] > window[1]


def is_device_name(name: str) -> bool:
    """Whether `name` is written as a device docsam can use (auto, cpu, cuda, cuda:N); whether that device
    is present is only known once torch is loaded (`pick_device`)."""
    return _DEVICE_NAME.fullmatch(name) is not None


def check_device_name(name: str) -> str:
    """`name` as `is_device_name` writes it, read in any case as every option's choices are (`CPU` is
    `cpu`); raises ValueError if it is no device name."""
    if not is_device_name(name.lower()):
        raise ValueError(f"{name!r} is not a device: use {DEVICE_HELP}")
    return name.lower()


def pick_device(name: str) -> torch.device:
    """The device `name` (see `check_device_name`) stands for. Raises UsageError if it is not present."""
    import torch

    name = check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA devices")
    return device


def usable_cpus() -> int:
    """The CPUs this process may use: those it may run on (its affinity: `taskset`'s, `numactl`'s, a Slurm
    allocation's), fewer where its cgroup's CPU quota allows less time than that (Docker's `--cpus`, a
    Kubernetes CPU limit), rounded up. torch's threads count the first only, and a process running more
    threads than its quota keeps them waiting on each other while the quota holds them back."""
    if hasattr(os, "process_cpu_count"):  # Python 3.13: affinity, or PYTHON_CPU_COUNT
        cpus = os.process_cpu_count() or 1
    elif hasattr(os, "sched_getaffinity"):
        cpus = len(os.sched_getaffinity(0))
    else:
        cpus = os.cpu_count() or 1
    quota = cpu_quota()
    return max(1, min(cpus, math.ceil(quota))) if quota is not None else cpus


def cpu_quota() -> float | None:
    """The CPUs' worth of time this process's cgroup and those above it allow (the lowest quota: cgroup v2's
    `cpu.max`, v1's `cpu.cfs_quota_us` over `cpu.cfs_period_us`), None without a quota or cgroups."""
    from model.cgroups import cgroup_folders

    quotas = [quota for folder in cgroup_folders("cpu") if (quota := _folder_quota(folder)) is not None]
    return min(quotas, default=None)


def _folder_quota(folder: Path) -> float | None:
    try:
        if (folder / "cpu.max").exists():
            quota, period = (folder / "cpu.max").read_text().split()
        else:
            quota = (folder / "cpu.cfs_quota_us").read_text().strip()
            period = (folder / "cpu.cfs_period_us").read_text().strip()
        return int(quota) / int(period) if quota not in ("max", "-1") and int(period) > 0 else None
    except (OSError, ValueError):
        return None


def fit_threads_to_cpus() -> None:
    """Compute with at most `usable_cpus()` threads: torch starts one per CPU the process may run on, however
    little time its cgroup's quota gives it. A thread count the user chose (`OMP_NUM_THREADS`,
    `MKL_NUM_THREADS`; torchrun's 1) is kept."""
    import torch

    if "OMP_NUM_THREADS" in os.environ or "MKL_NUM_THREADS" in os.environ:
        return
    usable = usable_cpus()
    if torch.get_num_threads() > usable:
        logger.info(
            "computing with %d thread%s, the CPU quota of this process's cgroup",
            usable,
            "" if usable == 1 else "s",
        )
        torch.set_num_threads(usable)


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep the memory of freed tensors for the next ones instead of returning it.

    glibc gets every block over its mmap threshold (at most 32 MiB) straight from the kernel and gives it
    back when freed, so each new tensor that large is page-faulted and zeroed afresh: an element-wise op that
    writes 92 MB (a 900×160×160 float mask stack) then takes 25–45 ms instead of 7, and a page makes hundreds
    of such tensors. Serving every block from the heap and never trimming it (mallopt(3): M_MMAP_MAX 0,
    M_TRIM_THRESHOLD -1) lets them reuse warm memory. The process keeps its peak footprint, which a batch
    job reaches on its first page anyway.

    Applies to the whole process from now on; returns whether it applied (glibc only, a no-op elsewhere).
    """
    import ctypes

    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):  # no such name: not glibc
        glibc = ""
    if not glibc.startswith("glibc"):
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, -1))


VARIANT_AND_CONFIG = "--variant and --model-config both name the architecture; give one of them"


@dataclass(frozen=True)
class ModelSpec:
    """The model a command runs: `weights` is a checkpoint path or a model-zoo name."""

    weights: str = "docsam-large"
    variant: str | None = None  # None: detected from the weights file (never the registry's)
    model_config: Path | None = None  # an architecture JSON, for variants other than the shipped ones
    device: str = "auto"
    precision: str = "fp32"


@dataclass
class LoadedModel:
    model: DocSAM
    weights: ResolvedWeights
    device: torch.device
    dtype: torch.dtype

    def autocast(self) -> AbstractContextManager[None]:
        """The precision the model was asked to run at (see `docsam_cli.precision`)."""
        from docsam_cli.precision import network_autocast

        return network_autocast(self.device, self.dtype)


@dataclass(frozen=True)
class ResolvedModel:
    """A model found and checked but not loaded yet: the weights file (and registry entry), the architecture.

    Resolving is quick and finds the request's problems (no such weights or config, a corrupted cached file,
    a missing CUDA device); loading, the slow part, can wait until a page needs the model."""

    spec: ModelSpec
    weights: ResolvedWeights
    config: DocSAMConfig | None

    def load(self) -> LoadedModel:
        """Pick the device, build the architecture and load the weights strictly. Raises UsageError (device
        or precision not available) or `model.CheckpointError`."""
        from model import load_model

        self._check_model_config()
        keep_freed_memory()
        fit_threads_to_cpus()
        device, dtype = _device_and_dtype(self.spec)
        started = time.perf_counter()
        logger.info(
            "loading %s (%s) on %s, %s",
            display_path(self.weights.path),
            self._architecture_source(),
            device,
            self.spec.precision,
        )
        model = load_model(self.weights.path, variant=self.spec.variant, config=self.config, device=device)
        logger.info("model ready in %.1f s", time.perf_counter() - started)
        return LoadedModel(model, self.weights, device, dtype)

    def _check_model_config(self) -> None:
        """Refuse a `--model-config` architecture torch cannot build (a width of 2^64) naming that file, which
        building it with the weights would blame (`model.checkpoint.meta_model`, on the meta device: about
        0.5 s for Base on the 2-core test machine)."""
        from model.checkpoint import meta_model

        if self.config is not None and self.spec.model_config is not None:
            meta_model(self.config, f"--model-config {display_path(self.spec.model_config)}")

    def _architecture_source(self) -> str:
        """Where the architecture comes from, for `-v`: `--variant`, `--model-config` or the weights."""
        if self.spec.variant is not None:
            return f"variant {self.spec.variant}"
        if self.spec.model_config is not None:
            return f"architecture of {display_path(self.spec.model_config)}"
        return "variant from the checkpoint"


def resolve_model(spec: ModelSpec) -> ResolvedModel:
    """Resolve the weights (path or zoo name) and read `--model-config`; check the device and precision
    where that can fail (a CUDA device, fp16). The CPU or `auto` at fp32 or bf16 cannot fail: torch is then
    not even imported until the model loads, so a batch of unreadable files is refused at once.

    Raises UsageError (device, precision or config not usable) or `docsam_cli.weights.WeightsError`, each
    one line.
    """
    from docsam_cli.weights import resolve_weights
    from model.config import DocSAMConfig

    if spec.variant is not None and spec.model_config is not None:
        raise UsageError(VARIANT_AND_CONFIG)
    if spec.device.startswith("cuda") or spec.precision == "fp16":
        _device_and_dtype(spec)
    weights = resolve_weights(spec.weights, spec.variant)
    try:
        config = DocSAMConfig.from_json(spec.model_config) if spec.model_config is not None else None
    except ValueError as error:
        raise UsageError(f"--model-config {error}") from None
    return ResolvedModel(spec, weights, config)


def _device_and_dtype(spec: ModelSpec) -> tuple[torch.device, torch.dtype]:
    from docsam_cli.precision import precision_dtype

    device = pick_device(spec.device)
    try:
        return device, precision_dtype(spec.precision, device)
    except ValueError as error:
        raise UsageError(f"--precision {spec.precision}: {error}") from None


def load_for_inference(spec: ModelSpec) -> LoadedModel:
    """`resolve_model`, then load: the model ready to run. Raises as those two do."""
    return resolve_model(spec).load()


@dataclass(frozen=True)
class GeometryOptions:
    """The geometry options as given (None: not given). `resolve` fills in the rest from the weights."""

    short_side: tuple[int, int] | None = None  # (LOW, HIGH): the short side becomes (LOW + HIGH) // 2
    window: tuple[int, int] | None = None  # (H, W)
    stride: tuple[int, int] | None = None  # (vertical, horizontal)
    keep_size: bool | None = None

    @classmethod
    def parse(
        cls,
        short_side: str | None = None,
        window: str | None = None,
        stride: str | None = None,
        keep_size: bool | None = None,
    ) -> GeometryOptions:
        """From the option strings (`N` or `A,B` each). Raises ValueError naming the option."""
        short = parse_size(short_side, "--short-side")
        if short is not None and short[0] > short[1]:
            raise ValueError(f"--short-side LOW,HIGH needs LOW <= HIGH, got {short_side!r}")
        windows, strides = parse_size(window, "--window"), parse_size(stride, "--stride")
        if windows is not None and strides is None and min(windows) < 2:
            raise ValueError(f"--window sides must be at least 2 (the stride is half a side), got {window!r}")
        if windows is not None and strides is not None and leaves_gaps(windows, strides):
            raise ValueError(
                f"--stride {stride} is longer than --window {window}: the page between the windows would be "
                "seen by none (give a stride of at most the window; by default half of it)"
            )
        return cls(short, windows, strides, keep_size)

    def resolve(self, weights: ResolvedWeights | None) -> Geometry:
        """The sliding-window geometry: the reference's defaults, adjusted to what is known of the weights
        (the registry's keep-size model and fine-tuned models' 800-px windows, the training crop, short-side
        range and keep-size rule stored by `docsam train`/`finetune`), then to these options. Raises
        `model.CheckpointError` when what is stored cannot be read, UsageError for a `--stride` alone longer
        than the window the weights or the defaults bring (`parse` refuses one longer than `--window`)."""
        from model.inference import Geometry

        keep_size = self.keep_size if self.keep_size is not None else bool(weights and weights.keep_size)
        default = Geometry.keep_size_default() if keep_size else Geometry()
        patch = self.window or (weights.patch if weights else None) or default.patch
        short_range = (weights.short_range if weights else None) or default.short_range
        if self.window is None and self.stride is not None and leaves_gaps(patch, self.stride):
            raise UsageError(
                f"--stride {self.stride[0]},{self.stride[1]} is longer than the window, {patch[0]}x{patch[1]}"
                " without --window: the page between the windows would be seen by none (give a stride of at"
                " most the window; by default half of it)"
            )
        return Geometry(
            short_range=self.short_side or short_range, patch=patch, stride=self.stride, keep_size=keep_size
        )


def describe_geometry(geometry: Geometry) -> str:
    """The geometry in words (for `-v`)."""
    low, high = geometry.short_range
    short = f"{low}-{high}, keep size" if geometry.keep_size else f"{(low + high) // 2}"
    (height, width), (down, across) = geometry.patch, geometry.window_stride
    return f"short side {short}; windows {height}x{width} at stride {down}x{across}"
