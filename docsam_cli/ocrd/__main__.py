"""`python -m docsam_cli.ocrd`: the same as the `ocrd-docsam-segment` command."""

from docsam_cli.ocrd import main

main()
