"""Tokenizer helpers shared by the Hugging Face scorers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def encoded_lengths(tokenizer, texts: Sequence[str]) -> np.ndarray:
    """Token count of each text as the model would see it untruncated, special tokens included."""
    if not texts:
        return np.zeros(0, dtype=np.int64)
    ids = tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)
    return np.fromiter((len(x) for x in ids["input_ids"]), dtype=np.int64, count=len(texts))
