"""`ocrd-docsam-segment`: docsam as an OCR-D processor (the `ocrd` extra: `pip install 'docsam[ocrd]'`).

`processor` is the processor and its command line; `parameters` reads its parameters (`ocrd-tool.json`)
into docsam's own settings; `frame` moves what the model found on OCR-D's derived page image back into the
page's pixels; `regions` puts the regions into the page's PAGE document. Only `processor` and `regions`
import OCR-D, and nothing outside this package imports them: plain `docsam` commands never load OCR-D.
"""

from __future__ import annotations

import sys

from docsam_cli.model_package import use_own_model

# The top-level modules of OCR-D core the processor imports.
CORE_MODULES = ("ocrd", "ocrd_models", "ocrd_utils", "ocrd_modelfactory")
MISSING_CORE = (
    "Error: ocrd-docsam-segment needs OCR-D core, which is not installed: pip install 'docsam[ocrd]'"
)


def main() -> None:
    """The `ocrd-docsam-segment` command. pip installs it with docsam, with the `ocrd` extra or without
    (a script cannot depend on an extra): without OCR-D core it is one line saying what to install, exit 1
    as the processor's other errors, as is a `model` of the user's that hides docsam's own."""
    hidden = use_own_model()
    if hidden is not None:
        print(f"Error: {hidden}", file=sys.stderr)
        raise SystemExit(1)
    try:
        from docsam_cli.ocrd.processor import cli
    except ModuleNotFoundError as error:
        if error.name not in CORE_MODULES:  # a module an older core lacks, or another package
            raise
        print(MISSING_CORE, file=sys.stderr)
        raise SystemExit(1) from None
    cli()
