"""`maxsim-minilm`: late-interaction (MaxSim) scoring over all-MiniLM-L6-v2 token embeddings.

score(q, i) = mean over the query's tokens of the max cosine similarity to the item's tokens.
Per-token embeddings are L2-normalised; [CLS], [SEP] and padding are dropped; queries read at
most `max_query_tokens`, items at most `max_item_tokens` tokens (special tokens included).

Each text is tokenised and encoded once; encoder batches are sorted by token length so they
carry little padding. BERT encoders (all-MiniLM-L6-v2 among them) are read by `bert.load_bert`,
without transformers' model classes, and run `BertTokensForward`. Query token embeddings are
kept per worker (the latest QUERY_CACHE_SIZE cached by text, or handed over whole with
`load_queries`, which the build uses to encode them once on the driver and broadcast them),
unpadded: one [query tokens, dim] matrix for all queries. A block's scores come from one matrix
product per chunk of length-sorted items, so neither side pays for padding in the product.
`score_pairs` scores aligned pairs of many queries, encoding each distinct item once.

``options.precision``: ``fp32`` (the default on a CPU), ``int8`` (dynamic int8 quantisation of
the encoder's Linear layers), ``bf16`` or ``fp16`` (the default on a GPU), as for the
cross-encoder; the similarity product itself is always fp32, on the CPU. ``[scorer] device``
places the encoder (`curindex.scoring.device`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch

from curindex.config import ScorerConfig
from curindex.scoring import bert
from curindex.scoring.cross_encoder import precision_option, torch_device, with_precision
from curindex.scoring.models import default_minilm_path
from curindex.scoring.tokens import encoded_lengths, load_tokenizer

# Bound on the similarity chunk [query tokens, item tokens] in floats (256 MB).
_SIM_CHUNK_FLOATS = 1 << 26
# Queries encoded on demand that are kept (at most ~50 KB each: 32 tokens x 384 floats).
QUERY_CACHE_SIZE = 1024


class MaxSimScorer:
    """Late interaction over a BERT-style encoder read from a local directory."""

    def __init__(self, cfg: ScorerConfig, *, fingerprint: str) -> None:
        path = cfg.path or str(default_minilm_path())
        self.fingerprint = fingerprint
        self.cfg = cfg
        self.tokenizer = load_tokenizer(path)
        # BERT encoders run `BertTokensForward` (fused query/key/value); others their own forward
        model, encoder, self.fused = bert.load_encoder(path)
        self.dim = int(model.config.hidden_size)
        self.device = torch.device(torch_device(cfg.device))
        self.encoder = with_precision(encoder, precision_option(cfg, self.device.type))
        self.encoder.to(self.device)
        tok = self.tokenizer
        # Only [CLS], [SEP] and padding are dropped; [UNK] carries content.
        special = (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id)
        self._special = np.array(sorted({t for t in special if t is not None}), dtype=np.int64)
        self.pad_id = tok.pad_token_id or 0
        # text -> [tokens, dim], normalised: the queries given by `load_queries` (kept), and the
        # latest QUERY_CACHE_SIZE others (a long-running reader sees unbounded distinct queries)
        self._query_cache: dict[str, torch.Tensor] = {}
        self._recent: OrderedDict[str, torch.Tensor] = OrderedDict()

    def truncated(self, texts: Sequence[str], *, role: str) -> np.ndarray:
        limit = self.cfg.max_query_tokens if role == "query" else self.cfg.max_item_tokens
        return encoded_lengths(self.tokenizer, texts) > limit

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], max_len: int) -> list[torch.Tensor]:
        """Normalised content-token embeddings [tokens, dim] (float32) per text."""
        tokens = self.tokenizer.ids(texts, special=True, max_length=max_len)
        order = np.argsort([len(t) for t in tokens], kind="stable")
        result: list[torch.Tensor] = [torch.empty(0)] * len(texts)
        for start in range(0, len(order), self.cfg.batch_size):
            idx = order[start : start + self.cfg.batch_size]
            width = max(len(tokens[i]) for i in idx)
            ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
            for row, i in enumerate(idx):
                ids[row, : len(tokens[i])] = tokens[i]
            mask = np.arange(width)[None, :] < np.array([len(tokens[i]) for i in idx])[:, None]
            # a batch of equal lengths runs without a mask
            # [b, t, dim]; the similarities are computed on the CPU, in float32
            hidden = self._hidden(ids, None if mask.all() else mask).float().cpu()
            hidden = torch.nn.functional.normalize(hidden, dim=-1)
            keep = mask & ~np.isin(ids, self._special)
            for row, i in enumerate(idx):
                result[i] = hidden[row, torch.from_numpy(keep[row])]
        return result

    def _hidden(self, ids: np.ndarray, mask: np.ndarray | None) -> torch.Tensor:
        ids_t = torch.from_numpy(ids).to(self.device)
        if self.fused:
            return self.encoder(ids_t, None if mask is None else
                                torch.from_numpy(mask).to(self.device))
        inputs = {"input_ids": ids_t}
        if mask is not None:
            inputs["attention_mask"] = torch.from_numpy(mask.astype(np.int64)).to(self.device)
        return self.encoder(**inputs).last_hidden_state

    def prepare_queries(self, queries: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token embeddings of `queries` as plain arrays (flat [tokens, dim] float32, tokens per
        query), small and picklable: encoded once, then given to workers by `load_queries`."""
        embs = self.encode(queries, self.cfg.max_query_tokens)
        flat = torch.cat(embs) if embs else torch.zeros(0, self.dim)
        return flat.numpy(), np.array([e.shape[0] for e in embs], dtype=np.int64)

    def load_queries(self, queries: Sequence[str], prepared: tuple[np.ndarray, np.ndarray]) -> None:
        """Take query token embeddings made by `prepare_queries(queries)` (on any process)."""
        flat, counts = prepared
        parts = torch.from_numpy(flat).split(counts.tolist())
        self._query_cache.update(zip(queries, parts, strict=True))

    def _query_embs(self, queries: Sequence[str]) -> list[torch.Tensor]:
        """The token embeddings [tokens, dim] of each query: cached, or encoded (in one pass)."""
        known = {q: e for q in dict.fromkeys(queries)
                 if (e := self._query_cache.get(q, self._recent.get(q))) is not None}
        missing = [q for q in dict.fromkeys(queries) if q not in known]
        if missing:
            known.update(zip(missing, self.encode(missing, self.cfg.max_query_tokens),
                             strict=True))
        for q in dict.fromkeys(queries):
            if q not in self._query_cache:
                self._recent[q] = known[q]
                self._recent.move_to_end(q)
        while len(self._recent) > QUERY_CACHE_SIZE:
            self._recent.popitem(last=False)
        return [known[q] for q in queries]

    def _queries(self, queries: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """All query tokens [tokens, dim] and the query each token belongs to [tokens]."""
        embs = self._query_embs(queries)
        counts = torch.tensor([e.shape[0] for e in embs])
        return torch.cat(embs), torch.repeat_interleave(torch.arange(len(queries)), counts)

    @torch.inference_mode()
    def score_block(self, queries: Sequence[str], items: Sequence[str]) -> np.ndarray:
        n_q, n_i = len(queries), len(items)
        if n_q == 0 or n_i == 0:
            return np.zeros((n_q, n_i), dtype=np.float32)
        q_flat, owner = self._queries(queries)  # [tq, d], [tq]
        return self._scores(q_flat, owner, n_q, self.encode(items, self.cfg.max_item_tokens))

    @torch.inference_mode()
    def score_pairs(self, queries: Sequence[str], items: Sequence[str]) -> np.ndarray:
        """Scores of the aligned pairs ``(queries[j], items[j])``: float32 [len(queries)].

        Each distinct text is encoded once (an item that several queries retrieved costs one
        encoding), then each query is scored against its items as `score_block` would.
        ValueError when the lengths differ."""
        if len(queries) != len(items):
            raise ValueError(f"{len(queries)} queries and {len(items)} items do not pair up")
        out = np.zeros(len(queries), dtype=np.float32)
        if not len(queries):
            return out
        i_texts = list(dict.fromkeys(items))
        embs = dict(zip(i_texts, self.encode(i_texts, self.cfg.max_item_tokens), strict=True))
        rows: dict[str, list[int]] = {}
        for j, q in enumerate(queries):
            rows.setdefault(q, []).append(j)
        for js, q_emb in zip(rows.values(), self._query_embs(list(rows)), strict=True):
            owner = torch.zeros(q_emb.shape[0], dtype=torch.long)
            out[js] = self._scores(q_emb, owner, 1, [embs[items[j]] for j in js])[0]
        return out

    def _scores(self, q_flat: torch.Tensor, owner: torch.Tensor, n_q: int,
                item_embs: list[torch.Tensor]) -> np.ndarray:
        """MaxSim of n_q queries (their tokens [tq, d], the query of each token [tq]) with
        encoded items ([tokens, d] each): float32 [n_q, len(item_embs)]."""
        n_i = len(item_embs)
        scores = np.zeros((n_q, n_i), dtype=np.float32)
        q_counts = torch.bincount(owner, minlength=n_q).clamp(min=1).float()
        lengths = np.array([e.shape[0] for e in item_embs])
        order = np.argsort(lengths, kind="stable")
        limit = max(1, _SIM_CHUNK_FLOATS // max(1, q_flat.shape[0]))
        start = 0
        while start < n_i:
            # Length-sorted items, as many as keep [tq, chunk, width] within the bound.
            width = max(1, int(lengths[order[start]]))
            stop = start + 1
            while stop < n_i and (stop - start + 1) * max(width, lengths[order[stop]]) <= limit:
                width = max(width, int(lengths[order[stop]]))
                stop += 1
            idx = order[start:stop]
            i_emb, i_mask = _pad([item_embs[i] for i in idx], width)  # [c, w, d], [c, w]
            sim = (q_flat @ i_emb.reshape(-1, i_emb.shape[2]).T).view(-1, len(idx), width)
            if not i_mask.all():
                sim.masked_fill_(~i_mask, -2.0)  # below any cosine
            best = sim.amax(dim=2)  # [tq, c]
            total = torch.zeros(n_q, len(idx)).index_add_(0, owner, best)
            chunk = (total / q_counts[:, None]).numpy()
            chunk[:, lengths[idx] == 0] = 0.0  # an item with no content tokens scores 0
            scores[:, idx] = chunk
            start = stop
        return scores


def _pad(embs: list[torch.Tensor], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack [t, d] tensors (t <= width) into [n, width, d] with zeros and a mask [n, width]."""
    dim = embs[0].shape[1]
    out = torch.zeros(len(embs), width, dim)
    mask = torch.zeros(len(embs), width, dtype=torch.bool)
    for row, e in enumerate(embs):
        out[row, : e.shape[0]] = e
        mask[row, : e.shape[0]] = True
    return out, mask
