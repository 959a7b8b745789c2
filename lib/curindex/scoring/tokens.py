"""The tokenizer of a model directory, as the scorers use it.

`load_tokenizer` reads a BERT tokenizer (``tokenizer_class`` BertTokenizer or BertTokenizerFast,
with a ``tokenizer.json`` that agrees with ``tokenizer_config.json`` and with how transformers
builds a BERT tokenizer: normaliser, WordPiece settings, added tokens, BERT's special-token
template) with the
`tokenizers` library directly: importing transformers takes about 2 s, and every Python worker
and each query-time Searcher would pay it on start-up. Any other tokenizer is read by
transformers' AutoTokenizer. Both give the same token ids (a test checks them on varied text).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_BERT_CLASSES = ("BertTokenizer", "BertTokenizerFast")
_UNLIMITED = int(1e30)  # transformers' model_max_length when the config sets none


class TextTokenizer:
    """Token ids of texts and the special token ids, over one of the two backends."""

    cls_token_id: int | None
    sep_token_id: int | None
    pad_token_id: int | None
    model_max_length: int
    uses_types: bool  # the model takes token type ids

    def ids(self, texts: Sequence[str], *, special: bool,
            max_length: int | None = None) -> list[list[int]]:
        """Token ids of each text, with the special tokens when `special`, at most
        `max_length` of them (special tokens included) when given."""
        raise NotImplementedError

    def pair(self, a: str, b: str) -> tuple[list[int], list[int]]:
        """Token ids and token type ids of the pair (a, b) with the special tokens."""
        raise NotImplementedError


class _Fast(TextTokenizer):
    def __init__(self, tok, config: dict) -> None:
        self.tok = tok
        tok.no_truncation()  # tokenizer.json may carry a truncation or padding of its own
        tok.no_padding()
        ids = {name: tok.token_to_id(_token(config.get(f"{name}_token")) or "")
               for name in ("cls", "sep", "pad")}
        self.cls_token_id, self.sep_token_id, self.pad_token_id = (
            ids["cls"], ids["sep"], ids["pad"]
        )
        self.model_max_length = int(config.get("model_max_length") or _UNLIMITED)
        self.uses_types = "token_type_ids" in config.get(
            "model_input_names", ["input_ids", "token_type_ids", "attention_mask"])

    def standard(self) -> bool:
        """Whether the special tokens go where transformers' BertTokenizer puts them:
        ``[CLS] a [SEP]`` and ``[CLS] a [SEP] b [SEP]`` with token types 0 then 1."""
        a, b = (self.tok.encode(t, add_special_tokens=False).ids for t in ("a", "b"))
        cls, sep = self.cls_token_id, self.sep_token_id
        single, pair = self.tok.encode("a"), self.tok.encode("a", "b")
        return (single.ids == [cls, *a, sep] and pair.ids == [cls, *a, sep, *b, sep]
                and pair.type_ids == [0] * (len(a) + 2) + [1] * (len(b) + 1))

    def ids(self, texts: Sequence[str], *, special: bool,
            max_length: int | None = None) -> list[list[int]]:
        if not texts:
            return []
        if max_length is not None:
            self.tok.enable_truncation(max_length)
        try:
            return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=special)]
        finally:
            if max_length is not None:
                self.tok.no_truncation()

    def pair(self, a: str, b: str) -> tuple[list[int], list[int]]:
        enc = self.tok.encode(a, b)
        return enc.ids, enc.type_ids


class _Transformers(TextTokenizer):
    def __init__(self, tok) -> None:
        self.tok = tok
        self.cls_token_id, self.sep_token_id = tok.cls_token_id, tok.sep_token_id
        self.pad_token_id = tok.pad_token_id
        self.model_max_length = int(getattr(tok, "model_max_length", None) or _UNLIMITED)
        self.uses_types = "token_type_ids" in tok.model_input_names

    def ids(self, texts: Sequence[str], *, special: bool,
            max_length: int | None = None) -> list[list[int]]:
        if not texts:
            return []
        enc = self.tok(list(texts), add_special_tokens=special, truncation=max_length is not None,
                       max_length=max_length, verbose=False)
        return enc["input_ids"]

    def pair(self, a: str, b: str) -> tuple[list[int], list[int]]:
        enc = self.tok(a, b, return_token_type_ids=True)
        ids = enc["input_ids"]
        return ids, enc.get("token_type_ids") or [0] * len(ids)


def load_tokenizer(path: str | Path) -> TextTokenizer:
    """The tokenizer in model directory `path` (see the module docstring). Raises OSError or
    ValueError (from transformers) when there is none."""
    fast = _bert_tokenizer(Path(path))
    if fast is not None:
        return fast
    from transformers import AutoTokenizer

    return _Transformers(AutoTokenizer.from_pretrained(str(path), local_files_only=True))


def _bert_tokenizer(d: Path) -> TextTokenizer | None:
    """A BERT tokenizer.json that means what its tokenizer_config.json says, else None."""
    try:
        config = json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8"))
        text = (d / "tokenizer.json").read_text(encoding="utf-8")
        spec = json.loads(text)
    except (OSError, ValueError):
        return None
    norm, model = spec.get("normalizer") or {}, spec.get("model") or {}
    specials = {_token(config.get(f"{name}_token"))
                for name in ("cls", "sep", "pad", "unk", "mask")}
    added = {t.get("content") for t in spec.get("added_tokens") or []} | {
        _token(t) for t in (config.get("added_tokens_decoder") or {}).values()}
    agrees = (
        config.get("tokenizer_class") in _BERT_CLASSES
        and config.get("do_basic_tokenize", True) and not config.get("never_split")
        and norm.get("type") == "BertNormalizer"
        and norm.get("lowercase") == config.get("do_lower_case", True)
        and norm.get("strip_accents") == config.get("strip_accents")
        and norm.get("handle_chinese_chars") == config.get("tokenize_chinese_chars", True)
        and norm.get("clean_text", True)
        and (spec.get("pre_tokenizer") or {}).get("type") == "BertPreTokenizer"
        # transformers' BertTokenizer keeps only the vocabulary of the WordPiece model, its added
        # tokens those of the config, and puts the special tokens in BERT's places (`standard`)
        and model.get("type") == "WordPiece"
        and model.get("unk_token") == _token(config.get("unk_token", "[UNK]"))
        and model.get("continuing_subword_prefix", "##") == "##"
        and model.get("max_input_chars_per_word", 100) == 100
        and added <= specials
    )
    if not agrees:
        return None
    from tokenizers import Tokenizer

    try:
        tok = _Fast(Tokenizer.from_str(text), config)  # the file read once
    except Exception:  # tokenizers' own error type: transformers reads it, or says what is wrong
        return None
    if None in (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id) or not tok.standard():
        return None
    return tok


def _token(value) -> str | None:
    """A special token of tokenizer_config.json: a string, or a dict with its ``content``."""
    return value.get("content") if isinstance(value, dict) else value


def encoded_lengths(tokenizer: TextTokenizer, texts: Sequence[str]) -> np.ndarray:
    """Token count of each text as the model would see it untruncated, special tokens included."""
    ids = tokenizer.ids(texts, special=True)
    return np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(texts))
