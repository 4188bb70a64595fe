"""Class lists and domain names of training sets whose exact prompt strings are known (the reference's
training scripts and their data folders).

The background prompt is `"<domain> _background_"`: the domain doubles as a dataset token the released
models saw in training, so a preset reproduces the prompts of that training set exactly.
"""

from __future__ import annotations

from dataclasses import dataclass


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


def resolve_prompts(classes: str | None, domain: str | None, preset: str | None) -> tuple[list[str], str]:
    """(class names, domain) from the command line; raises ValueError with a user-facing message."""
    if classes is not None and preset is not None:
        raise ValueError("give either --classes or --preset, not both")
    if classes is not None:
        names = [name.strip() for name in classes.split(",") if name.strip()]
        if not names:
            raise ValueError("--classes needs at least one class name")
        if len(set(names)) != len(names):
            raise ValueError("--classes names a class twice")
        return names, domain if domain is not None else ""
    chosen = PRESETS.get((preset or DEFAULT_PRESET).lower())
    if chosen is None:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    return list(chosen.classes), domain if domain is not None else chosen.domain


def describe_presets() -> str:
    return "\n".join(
        f"{name}: {preset.description}; domain {preset.domain!r}; classes {', '.join(preset.classes)}"
        for name, preset in PRESETS.items()
    )
