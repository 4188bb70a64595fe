"""`ocrd-docsam-segment`: docsam as an OCR-D processor (the `ocrd` extra: `pip install 'docsam[ocrd]'`).

`processor` is the processor and its command line; `parameters` reads its parameters (`ocrd-tool.json`)
into docsam's own settings; `frame` moves what the model found on OCR-D's derived page image back into the
page's pixels; `regions` puts the regions into the page's PAGE document. Only `processor` and `regions`
import OCR-D, and nothing outside this package imports them: plain `docsam` commands never load OCR-D.
"""
