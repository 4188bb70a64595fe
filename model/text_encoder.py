"""Class-name encoder: all-MiniLM-L6-v2 run as a plain BERT, attention-masked mean pooling, no normalisation.

The BERT weights travel inside every DocSAM checkpoint; the WordPiece tokenizer ships with this package
(`model/tokenizer/tokenizer.json`), so nothing is downloaded at run time.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from model.config import TextEncoderConfig
from model.tokenization import load_tokenizer

# Class-name embeddings kept per precision, the least recently used dropped beyond it: a run uses a few
# dozen names; a Python caller asking with ever new names (a name per page) grew the cache for ever, by
# about 1.6 KB a name (MiniLM's 384 floats, measured with tracemalloc).
MAX_CACHED_NAMES = 4096


def tokenize(names: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (len(names), L) int64; names longer than the model are truncated."""
    encodings = load_tokenizer().encode_batch(names)
    ids = torch.tensor([encoding.ids for encoding in encodings], dtype=torch.long)
    mask = torch.tensor([encoding.attention_mask for encoding in encodings], dtype=torch.long)
    return ids[:, :max_length], mask[:, :max_length]


class TextEncoder(nn.Module):
    """Class names → (C, hidden_size) sentence embeddings, before DocSAM's projection."""

    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel  # heavy import, only when a model is built

        self.config = config
        bert_config = BertConfig(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            intermediate_size=config.intermediate_size,
            max_position_embeddings=config.max_position_embeddings,
            type_vocab_size=config.type_vocab_size,
            layer_norm_eps=config.layer_norm_eps,
            hidden_dropout_prob=config.hidden_dropout_prob,
            attention_probs_dropout_prob=config.attention_probs_dropout_prob,
            hidden_act="gelu",
        )
        self.bert = BertModel(bert_config, add_pooling_layer=True)
        # Per precision (`cache_key`), as the embeddings differ with it: name → embedding, least recently
        # used first (`MAX_CACHED_NAMES` at most).
        self._cache: dict[tuple[torch.dtype | None, torch.dtype], dict[str, torch.Tensor]] = {}

    def train(self, mode: bool = True) -> TextEncoder:
        self._cache.clear()
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._cache.clear()
        super()._load_from_state_dict(*args, **kwargs)

    @torch.no_grad()
    def forward(self, names: list[str]) -> torch.Tensor:
        """Embeddings of `names` in order. Never receives gradients (the reference runs it under no_grad);
        in eval mode results are cached per string and precision (`cache_key`), since they depend on nothing
        else.
        """
        device = self.bert.embeddings.word_embeddings.weight.device
        distinct = list(dict.fromkeys(names))
        if self.training:
            lookup = dict(zip(distinct, self._encode(distinct, device), strict=True))
        else:
            lookup = self._cached(distinct, device)
        return torch.stack([lookup[name].to(device) for name in names])

    def _cached(self, names: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        """The embeddings of the distinct `names`, those not cached computed; all of them become the most
        recently used, and the least recently used beyond `MAX_CACHED_NAMES` are dropped.

        A model shared by threads (a server's) calls this at once from several: a name that another call
        has just taken out of the cache (to put it back as the most recently used) or dropped is computed
        again here, not a KeyError, each name looked up and taken in one step."""
        cache = self._cache.setdefault(self.cache_key(), {})
        found = {name: cache.pop(name, None) for name in names}
        missing = [name for name, embedding in found.items() if embedding is None]
        if missing:
            found.update(zip(missing, self._encode(missing, device), strict=True))
        cache.update(found)
        for name in list(itertools.islice(cache, max(0, len(cache) - MAX_CACHED_NAMES))):
            cache.pop(name, None)
        return found

    def cache_key(self) -> tuple[torch.dtype | None, torch.dtype]:
        """The precision the encoder computes in now: the autocast dtype on its device (None outside
        autocast) and its weights' dtype (`model.to(torch.bfloat16)` after a float32 call)."""
        weight = self.bert.embeddings.word_embeddings.weight
        return _autocast_dtype(weight.device), weight.dtype

    def _encode(self, names: list[str], device: torch.device) -> torch.Tensor:
        ids, mask = tokenize(names, self.config.max_position_embeddings)
        ids, mask = ids.to(device), mask.to(device)
        hidden = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.to(hidden.dtype)[..., None]
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype autocast computes in on `device` now, None outside autocast."""
    return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
