"""What a conversion did: images, instances per class, repairs, omissions and failures."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from docsam_cli.datasets.records import Note
from docsam_cli.errors import InputError
from docsam_cli.names import output_text

REPORT_FILE = "convert_report.json"
"""The report convert-dataset writes into its output folder; never read back as a source."""


@dataclass
class ConversionReport:
    images: int = 0
    empty_images: int = 0  # converted pages with no instance left (kept as negatives)
    instances: Counter[str] = field(default_factory=Counter)
    fixed: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    # reason → every "file: where" (the key's name is kept): the terminal gives the counts and points to
    # the file, where a user finds each region to mend in the sources, not only the first few
    examples: dict[str, list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # one line per unusable file or page
    warnings: list[str] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)

    def add_note(self, source: Path, note: Note) -> None:
        tally = self.fixed if note.kind == "fixed" else self.dropped
        tally[note.reason] += 1
        where = output_text(f"{source}: {note.where}" if note.where else str(source))
        self.examples.setdefault(note.reason, []).append(where)

    def add_error(self, error: InputError) -> None:
        self.errors.append(output_text(str(error)))

    def to_json(self) -> dict:
        return {
            "images": self.images,
            "empty_images": self.empty_images,
            "instances": dict(sorted(self.instances.items())),
            "fixed": dict(sorted(self.fixed.items())),
            "dropped": dict(sorted(self.dropped.items())),
            "examples": self.examples,
            "errors": self.errors,
            "warnings": self.warnings,
            "splits": self.splits,
        }
