"""Class lists and domain names of training sets whose exact prompt strings are known (the reference's
training scripts and their data folders).

The background prompt is `"<domain> _background_"`: the domain doubles as a dataset token the released
models saw in training, so a preset reproduces the prompts of that training set exactly. A checkpoint
written by `docsam train`/`finetune` or installed by `download-weights` carries its training classes and
dataset name, and the model zoo knows those of some of its fine-tuned models (`checkpoint_preset`): they
replace the default preset for those weights.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from docsam_cli.datasets.classes import clean_name, split_list
from docsam_cli.names import one_line, xml_text
from docsam_cli.user_paths import expand_user


@dataclass(frozen=True)
class Preset:
    classes: tuple[str, ...]
    domain: str
    description: str


PRESETS: dict[str, Preset] = {
    "publaynet": Preset(
        ("figure", "list", "table", "text", "title"),
        "PubLayNet",
        "PubLayNet categories (scientific articles); the default",
    ),
    "doclaynet": Preset(
        (
            "Caption",
            "Footnote",
            "Formula",
            "List-item",
            "Page-footer",
            "Page-header",
            "Picture",
            "Section-header",
            "Table",
            "Text",
            "Title",
        ),
        "DocLayNet DocLayNet_core",
        "DocLayNet's eleven categories (reports, manuals, patents, ...)",
    ),
}
DEFAULT_PRESET = "publaynet"


def resolve_prompts(
    classes: str | None, domain: str | None, preset: str | None, default: Preset | None = None
) -> tuple[list[str], str]:
    """(class names, domain) from the command line; raises ValueError with a user-facing message.

    Without `classes` and `preset`: `default` (the checkpoint's, see `checkpoint_preset`), else the
    default preset."""
    if classes is not None and preset is not None:
        raise ValueError("give either --classes or --preset, not both")
    refuse_undecodable(classes, "--classes")
    refuse_undecodable(domain, "--domain")
    if classes is not None:
        # `\,` is a comma inside a name, as in convert-dataset --map
        names = [name.strip() for name in split_list(classes) if name.strip()]
        if not names:
            raise ValueError("--classes needs at least one class name")
        refuse_repeated_classes(names)
        # blanks inside a name as one space, as convert-dataset writes class names: the classes segment
        # writes are then those a conversion of its files reads back (the model reads both alike)
        names = [clean_name(name) for name in names]
        _refuse_control_characters(names)
        return names, domain if domain is not None else ""
    if preset is None and default is not None:
        refuse_repeated_classes(default.classes, f"the weights' class list ({default.description})")
        return list(default.classes), domain if domain is not None else default.domain
    chosen = PRESETS.get((preset or DEFAULT_PRESET).lower())
    if chosen is None:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    return list(chosen.classes), domain if domain is not None else chosen.domain


def refuse_undecodable(text: str | None, option: str) -> None:
    """Refuse (ValueError naming `option`) prompt text holding a byte that is not UTF-8, which Python
    carries as a lone surrogate (PEP 383: a name typed in a Latin-1 terminal or script): the text encoder's
    tokenizer takes Unicode text only, and would fail on it."""
    try:
        (text or "").encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{option} '{one_line(text or '')}' holds a byte that is not UTF-8 (shown as \\xNN): give it in "
            "UTF-8, the text the model reads"
        ) from None


def _refuse_control_characters(names: Sequence[str]) -> None:
    """Refuse (ValueError) a class name holding a character XML forbids (a control character such as an
    escape): PAGE and ALTO would write it percent-encoded (`%1B`), which convert-dataset and evaluate then
    read as another class than COCO's."""
    for name in names:
        if xml_text(name) != name:
            raise ValueError(
                f"--classes names a class holding a control character: '{one_line(name)}' (PAGE and ALTO "
                "cannot hold it)"
            )


def refuse_repeated_classes(names: Sequence[str], source: str = "--classes") -> None:
    """Refuse (ValueError naming `source`, where the list comes from) a class named twice, also in another
    case, accents or spacing: the text encoder's normalizer lowercases its prompts and strips their
    accents, and its tokens ignore spaces and split off punctuation, so `Table,table`, `Légende,legende` or
    `text-line,text - line` would give two identical prompts, and the second class would never win a
    region. So would names its vocabulary cannot spell (`图,表`: both `[UNK]`). Every class list the model
    is prompted or trained with goes through here: `--classes`, a checkpoint's stored classes, a dataset's
    categories (train, finetune), a ground truth's (evaluate --weights)."""
    for earlier, name in repeated_classes(names)[:1]:
        raise ValueError(f"{source} names a class twice: {name!r}{read_alike(earlier, name)}")


def repeated_classes(names: Sequence[str]) -> list[tuple[str, str]]:
    """(earlier, later) for every name of `names` that the model reads as an earlier one (see
    `refuse_repeated_classes`)."""
    first_of: dict[str, str] = {}
    repeated = []
    for name in names:
        key = prompt_key(name)
        if key in first_of:
            repeated.append((first_of[key], name))
        else:
            first_of[key] = name
    return repeated


def read_alike(earlier: str, name: str) -> str:
    """Why `name` repeats `earlier` (nothing when it is the same string), in parentheses after a space."""
    from model.tokenization import basic_words

    key = prompt_key(name)
    if earlier == name:
        return ""
    if basic_words(earlier) == basic_words(name):
        return (
            f" (as {earlier!r}; the model reads class names in lower case, without accents, "
            "punctuation as separate words)"
        )
    return (
        f" (as {earlier!r}; the model reads both as the same tokens, {key}: characters outside its "
        "vocabulary are all read as [UNK])"
    )


def prompt_key(name: str) -> str:
    """What the text encoder reads of a class name: its tokens as the shipped tokenizer gives them (lower
    case, accents stripped, split at spaces and around punctuation, unknown words `[UNK]`; see
    `model.tokenization`)."""
    from model.tokenization import prompt_tokens

    return " ".join(prompt_tokens(name))


def checkpoint_preset(weights: str | os.PathLike[str]) -> Preset | None:
    """The classes and dataset name (the domain; "" when not known) the weights were trained with, as a
    preset: those a weights file (or the folder holding it) carries, written by `docsam train`/`finetune` or
    `download-weights`; else those the model zoo lists for a zoo name, or for a file named as a zoo entry
    (its published file, or one an older `download-weights` installed without them); else None.

    Reads only the file's header, without importing torch. Raises `model.CheckpointError` naming the file
    when it cannot be read."""
    from docsam_cli.weights.registry import zoo_preset
    from model.checkpoint import CheckpointError, stored_classes, weights_in_folder

    path = Path(expand_user(weights))
    if path.is_dir():  # a run's or checkpoint's folder: its weights file, as loading finds it
        try:
            path = weights_in_folder(path)
        except CheckpointError:
            return None  # loading says what the folder lacks
    if not path.is_file():
        return zoo_preset(str(weights))

    stored = stored_classes(path)
    if stored is None:
        return zoo_preset(path.stem)
    return Preset(stored.classes, stored.dataset or "", f"the classes stored in {weights}")


def describe_presets() -> str:
    return "\n".join(
        f"{name}: {preset.description}; domain {preset.domain!r}; classes {', '.join(preset.classes)}"
        for name, preset in PRESETS.items()
    )
