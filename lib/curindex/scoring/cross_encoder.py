"""`cross-encoder`: any Hugging Face AutoModelForSequenceClassification in a local directory.

Each query and each item of a block is tokenised once; pair inputs are assembled from token
ids with the tokenizer's own special-token template (learnt from one probe pair, so BERT's
``[CLS] q [SEP] i [SEP]`` and RoBERTa's ``<s> q </s></s> i </s>`` both work). Pairs are sorted
by length so each forward batch carries little padding. The score is the logit of
``options.label_index`` (default 0; a model with several labels must name one).

Truncation: a query keeps at most ``max_query_tokens`` content tokens; the item gets the rest of
``max_query_tokens + max_item_tokens`` (and of the model's own maximum length), special tokens
included.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from curindex.config import ScorerConfig
from curindex.errors import ScorerError


class CrossEncoderScorer:
    def __init__(self, cfg: ScorerConfig, *, fingerprint: str) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.fingerprint = fingerprint
        self.cfg = cfg
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(cfg.path, local_files_only=True)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                cfg.path, local_files_only=True
            ).eval()
        except (OSError, ValueError) as e:
            raise ScorerError(f"[scorer] path {cfg.path!r}: cannot load a model: {e}") from e
        n_labels = self.model.config.num_labels
        if "label_index" in cfg.options:
            self.label = int(cfg.options["label_index"])
        elif n_labels == 1:
            self.label = 0
        else:
            raise ScorerError(
                f"[scorer] path {cfg.path!r}: the model has {n_labels} labels; "
                "set [scorer] options.label_index to the one that scores relevance"
            )
        self._template()
        model_max = int(getattr(self.model.config, "max_position_embeddings", 512))
        tok_max = int(getattr(self.tokenizer, "model_max_length", model_max) or model_max)
        self.max_len = min(model_max, tok_max, cfg.max_query_tokens + cfg.max_item_tokens)
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.uses_types = "token_type_ids" in self.tokenizer.model_input_names

    def _template(self) -> None:
        """Learn where the special tokens go around a pair from one probe pair."""
        a = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        b = self.tokenizer("b", add_special_tokens=False)["input_ids"]
        enc = self.tokenizer("a", "b", return_token_type_ids=True)
        ids, types = enc["input_ids"], enc.get("token_type_ids") or [0] * len(enc["input_ids"])
        if len(a) != 1 or len(b) != 1 or ids.count(a[0]) != 1 or ids.count(b[0]) != 1:
            raise ScorerError(f"[scorer] path {self.cfg.path!r}: unsupported tokenizer template")
        ia, ib = ids.index(a[0]), ids.index(b[0])
        self.t_ids = (ids[:ia], ids[ia + 1 : ib], ids[ib + 1 :])
        self.t_types = (types[:ia], types[ia], types[ia + 1 : ib], types[ib], types[ib + 1 :])
        self.n_special = len(ids) - 2

    def _content(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]

    def truncated(self, texts: Sequence[str], *, role: str) -> np.ndarray:
        limit = self.cfg.max_query_tokens if role == "query" else self.cfg.max_item_tokens
        return np.array([len(t) > limit for t in self._content(texts)], dtype=bool)

    def pair_inputs(self, q: list[int], i: list[int]) -> tuple[list[int], list[int]]:
        """Token ids and token type ids of one pair, truncated as documented above."""
        q = q[: self.cfg.max_query_tokens]
        i = i[: max(0, self.max_len - self.n_special - len(q))]
        pre, mid, post = self.t_ids
        tp, tq, tm, ti, tpost = self.t_types
        ids = pre + q + mid + i + post
        types = tp + [tq] * len(q) + tm + [ti] * len(i) + tpost
        return ids, types

    @torch.inference_mode()
    def score_block(self, queries: Sequence[str], items: Sequence[str]) -> np.ndarray:
        q_tok, i_tok = self._content(queries), self._content(items)
        pairs = [self.pair_inputs(q, i) for q in q_tok for i in i_tok]  # query-major
        lengths = np.fromiter((len(p[0]) for p in pairs), dtype=np.int64, count=len(pairs))
        order = np.argsort(lengths, kind="stable")
        out = np.empty(len(pairs), dtype=np.float32)
        bs = self.cfg.batch_size
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            width = int(lengths[idx].max())
            ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
            types = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, p in enumerate(idx):
                n = lengths[p]
                ids[row, :n], types[row, :n], mask[row, :n] = pairs[p][0], pairs[p][1], 1
            inputs = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
            if self.uses_types:
                inputs["token_type_ids"] = torch.from_numpy(types)
            logits = self.model(**inputs).logits  # [batch, labels]
            out[idx] = logits[:, self.label].float().numpy()
        return out.reshape(len(queries), len(items))
