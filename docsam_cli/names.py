"""File names as they appear in messages and inside output files.

Four rules, each defined once here:

* Messages (`display_path`, `one_line`): a name is printed exactly and on one line. Control characters
  (newline, tab, escape, ...) are shown as Python escapes (`\\n`, `\\x1b`), and bytes that are not valid
  UTF-8 as `\\xNN`; nothing is ever interpreted as Rich markup (printing goes through `docsam_cli.console`).
* Output files (`output_text`): PAGE, ALTO, COCO and JSON lines must stay valid UTF-8, so a byte of a file
  name that is not valid UTF-8 (Python carries it as a lone surrogate, PEP 383) is written percent-encoded,
  `%FF`. Everything else is written unchanged.
* Text inside XML (`xml_text`, PAGE and ALTO): as `output_text`, and the characters XML 1.0 does not allow
  (C0 controls but tab, newline and carriage return; lone surrogates; U+FFFE, U+FFFF) percent-encoded as
  their UTF-8 bytes (`%1B`, `%EF%BF%BF`), as `file_name_text` encodes them.
* Names of output files made from input names (`file_name_text`): control characters, undecodable bytes
  and the other characters XML forbids (U+FFFE, U+FFFF) percent-encoded as their UTF-8 / raw bytes (`%0A`,
  `%1B`, `%FF`), so an output name is valid UTF-8, one line, and the same text inside the output files as
  on disk.
"""

from __future__ import annotations

import os
import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SURROGATE = re.compile(r"[\udc80-\udcff]")
_XML_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_NOT_IN_FILE_NAMES = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ufffe\uffff]")  # `_CONTROL` and XML's


def one_line(text: str) -> str:
    """`text` with control characters and undecodable bytes escaped, so it prints as one exact line."""
    text = _SURROGATE.sub(lambda match: f"\\x{ord(match.group()) - 0xDC00:02x}", text)
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


def display_path(path: str | os.PathLike[str]) -> str:
    """A path for a message: exact, one line (see `one_line`)."""
    return one_line(os.fspath(path))


def output_text(text: str) -> str:
    """Text safe to write into a UTF-8 output: undecodable file-name bytes percent-encoded (`%FF`)."""
    return _SURROGATE.sub(lambda match: f"%{ord(match.group()) - 0xDC00:02X}", text)


def xml_text(text: str) -> str:
    """Text fit for an XML 1.0 attribute or element (lxml refuses the rest): see the module doc."""
    return _XML_FORBIDDEN.sub(_percent_encoded, output_text(text))


def file_name_text(text: str) -> str:
    """`text` fit to name an output file: control characters, undecodable bytes and the noncharacters XML
    forbids percent-encoded."""
    return _NOT_IN_FILE_NAMES.sub(_percent_encoded, output_text(text))


def _percent_encoded(match: re.Match[str]) -> str:
    """The matched characters as percent-encoded UTF-8 (a lone surrogate as the bytes UTF-8 would give it)."""
    return "".join(f"%{byte:02X}" for byte in match.group().encode("utf-8", "surrogatepass"))
