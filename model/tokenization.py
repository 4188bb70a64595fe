"""The MiniLM WordPiece tokenizer shipped with the package (`model/tokenizer/tokenizer.json`), without torch:
the CLI reads class names with it before any model is built."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer

TOKENIZER_FILE = Path(__file__).with_name("tokenizer") / "tokenizer.json"


@lru_cache(maxsize=1)
def load_tokenizer() -> Tokenizer:
    """The MiniLM tokenizer, padding to the longest name of a call (its file pads to 128 by default)."""
    tokenizer = Tokenizer.from_file(str(TOKENIZER_FILE))
    tokenizer.no_truncation()
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    return tokenizer


def basic_words(name: str) -> list[str]:
    """The words the tokenizer reads in a name before WordPiece splits them: BERT's normalizer (lower
    case, accents stripped) and basic tokenization (split at whitespace and around each punctuation mark,
    so `text-line` and `text - line` are the same three words)."""
    tokenizer = load_tokenizer()
    normalized = tokenizer.normalizer.normalize_str(name)
    return [word for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normalized)]


def prompt_tokens(name: str) -> list[str]:
    """The tokens the text encoder reads for a name, `[CLS]` and `[SEP]` left out: `basic_words` cut into
    WordPieces, a word with a character outside the vocabulary read as one `[UNK]` (most Chinese
    characters, Georgian, Armenian, Ethiopic, emoji)."""
    return load_tokenizer().encode(name).tokens[1:-1]
