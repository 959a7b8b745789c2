"""`cross-encoder`: any Hugging Face AutoModelForSequenceClassification in a local directory.

Each query and each item of a block is tokenised once; pair inputs are assembled from token
ids with the tokenizer's own special-token template (learnt from one probe pair, so BERT's
``[CLS] q [SEP] i [SEP]`` and RoBERTa's ``<s> q </s></s> i </s>`` both work). Pairs are sorted
by length so each forward batch carries little padding, and a batch of equal lengths runs
without an attention mask. The score is the logit of ``options.label_index`` (default 0; a
model with several labels must name one).

BERT classifiers (the ms-marco MiniLM cross-encoders among them) are read by `bert.load_bert`
(without transformers' model classes, which take seconds to import) and run `BertClsForward`:
query, key and value projections fused into one GEMM per layer, and the last layer computed for
the ``[CLS]`` position only, with its keys and values folded into the query (the classifier reads
nothing else), so the scores are the model's own (to float rounding) at about 17% fewer FLOPs.
Other architectures run the model's own forward. The time goes to the GEMMs (about 80% of it,
near the CPU's peak FLOP rate; `bench/scoring.py --profile` shows it), so what a batch does not
compute matters more than how: little padding and no keys and values for the last layer.

``options.precision``: ``fp32`` (default); ``int8`` (the encoder layers' Linear layers with
int8 weights and dynamically quantised int8 activations, the [CLS] row in float: the fast path
on x86 CPUs, see `Int8Linear`); ``bf16`` (for CPUs with native bf16, AVX512-BF16 or AMX; slower
than fp32 on others); ``fp16`` (half precision: the default on a GPU, see
``[scorer] device`` and `curindex.scoring.device`). Each changes the scores slightly; set
explicitly, like every option, it changes the scorer fingerprint (the device does not: fp16 on
a GPU ranks as fp32 does within the tolerance the int8 path meets).

Weights: a checkpoint that does not provide every parameter of the model (a bi-encoder's
folder has no classification head, which transformers would initialise at random) is refused
with a ScorerError naming the missing parameters (`bert.complete_model`).

Truncation: a query keeps at most ``max_query_tokens`` content tokens; the item gets the rest of
``max_query_tokens + max_item_tokens`` (and of the model's own maximum length), special tokens
included.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from curindex.config import ScorerConfig
from curindex.errors import ScorerError
from curindex.scoring import bert
from curindex.scoring.device import check_precision, choose_device, default_precision
from curindex.scoring.tokens import load_tokenizer

PRECISIONS = ("fp32", "int8", "bf16", "fp16")


class PairTokens(NamedTuple):
    """The token ids of a block's queries and items after truncation."""

    q_ids: np.ndarray  # [n_q, w] query token ids, padded
    q_len: np.ndarray  # [n_q] query tokens kept
    i_ids: np.ndarray  # [n_i, w'] item token ids, padded
    i_len: np.ndarray  # [n_i] item tokens, at most the model's length
    budget: np.ndarray  # [n_q] item tokens a pair with each query keeps at most


class CrossEncoderScorer:
    def __init__(self, cfg: ScorerConfig, *, fingerprint: str) -> None:
        self.fingerprint = fingerprint
        self.cfg = cfg
        self.device = torch.device(torch_device(cfg.device))
        self.precision = precision_option(cfg, self.device.type)
        try:
            self.tokenizer = load_tokenizer(cfg.path)
            model = bert.load_bert(cfg.path, classifier=True)
            if model is None:  # not a BERT checkpoint it reads: transformers loads it
                from transformers import AutoModelForSequenceClassification

                model = bert.complete_model(AutoModelForSequenceClassification, cfg.path,
                                            what="a sequence classifier (cross-encoder)")
        except (OSError, ValueError) as e:
            raise ScorerError(f"[scorer] path {cfg.path!r}: cannot load a model: {e}") from e
        n_labels = model.config.num_labels
        if "label_index" in cfg.options:
            self.label = int(cfg.options["label_index"])
            if not 0 <= self.label < n_labels:
                raise ScorerError(f"[scorer] options.label_index = {self.label}: the model at "
                                  f"{cfg.path!r} has {n_labels} labels (0 to {n_labels - 1})")
        elif n_labels == 1:
            self.label = 0
        else:
            raise ScorerError(
                f"[scorer] path {cfg.path!r}: the model has {n_labels} labels; "
                "set [scorer] options.label_index to the one that scores relevance"
            )
        self._template()
        model_max = int(getattr(model.config, "max_position_embeddings", 512))
        self.max_len = min(model_max, self.tokenizer.model_max_length,
                           cfg.max_query_tokens + cfg.max_item_tokens)
        if cfg.max_query_tokens + self.n_special > min(model_max,
                                                       self.tokenizer.model_max_length):
            # a longer query would not fit the pair: the forward pass would fail mid-build
            raise ScorerError(
                f"[scorer] max_query_tokens = {cfg.max_query_tokens} with the pair's "
                f"{self.n_special} special tokens does not fit the model's "
                f"{min(model_max, self.tokenizer.model_max_length)} positions ({cfg.path!r})")
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.uses_types = self.tokenizer.uses_types
        self.cls_only = bert.is_plain_bert(model)
        # BERT classifiers run `BertClsForward` in the requested precision (it shares the
        # model's submodules: bf16 converts those too); other models run their own forward.
        self.model = model if self.cls_only else with_precision(model, self.precision)
        self.cls_forward = (
            with_precision(bert.BertClsForward(model), self.precision) if self.cls_only else None
        )
        (self.cls_forward if self.cls_only else self.model).to(self.device)

    def _template(self) -> None:
        """Learn where the special tokens go around a pair from one probe pair."""
        a, b = self.tokenizer.ids(["a", "b"], special=False)
        ids, types = self.tokenizer.pair("a", "b")
        if len(a) != 1 or len(b) != 1 or ids.count(a[0]) != 1 or ids.count(b[0]) != 1:
            raise ScorerError(f"[scorer] path {self.cfg.path!r}: unsupported tokenizer template")
        ia, ib = ids.index(a[0]), ids.index(b[0])
        self.t_ids = (ids[:ia], ids[ia + 1 : ib], ids[ib + 1 :])
        self.t_types = (types[:ia], types[ia], types[ia + 1 : ib], types[ib], types[ib + 1 :])
        self.n_special = len(ids) - 2

    def _content(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer.ids(texts, special=False)

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
        n_q, n_i = len(queries), len(items)
        if n_q == 0 or n_i == 0:
            return np.zeros((n_q, n_i), dtype=np.float32)
        tokens = self._plan(self._content(queries), self._content(items))
        qs, its = np.divmod(np.arange(n_q * n_i), n_i)  # query-major
        return self._score(qs, its, tokens).reshape(n_q, n_i)

    @torch.inference_mode()
    def score_pairs(self, queries: Sequence[str], items: Sequence[str]) -> np.ndarray:
        """Scores of the aligned pairs ``(queries[j], items[j])``: float32 [len(queries)].

        Each distinct text is tokenised once, and pairs of different queries share forward
        batches, sorted by length as in `score_block` (a batch of queries costs what their
        pairs cost, not one padded block per query). ValueError when the lengths differ."""
        if len(queries) != len(items):
            raise ValueError(f"{len(queries)} queries and {len(items)} items do not pair up")
        if not len(queries):
            return np.zeros(0, dtype=np.float32)
        q_texts, qs = _distinct(queries)
        i_texts, its = _distinct(items)
        return self._score(qs, its, self._plan(self._content(q_texts), self._content(i_texts)))

    def _score(self, qs: np.ndarray, its: np.ndarray, tokens: PairTokens) -> np.ndarray:
        """Scores of the pairs (query qs[j], item its[j]) of `tokens`: float32 [len(qs)]."""
        lengths = self.n_special + tokens.q_len[qs] + _kept(tokens, qs, its)
        # Longest first: the first batch allocates the largest activations, and the later ones
        # reuse that memory from the heap. Growing batches would each get fresh pages from the
        # OS (above glibc's mmap threshold), which costs several percent of the forward time.
        order = np.argsort(-lengths, kind="stable")
        out = np.empty(len(qs), dtype=np.float32)

        def run(idx: np.ndarray) -> None:
            out[idx] = self._logits(*self._batch(qs[idx], its[idx], tokens)).cpu().numpy()

        batches = [order[s : s + self.cfg.batch_size]
                   for s in range(0, len(order), self.cfg.batch_size)]
        # a GPU runs one batch at a time (its streams are not CPU cores)
        in_streams(run, batches, 1 if self.device.type == "cuda" else torch.get_num_threads())
        return out

    def _plan(self, q_tok: list[list[int]], i_tok: list[list[int]]) -> PairTokens:
        """The queries' and items' token ids after truncation (see `PairTokens`)."""
        q_tok = [t[: self.cfg.max_query_tokens] for t in q_tok]
        i_tok = [t[: self.max_len] for t in i_tok]
        q_len = np.array([len(t) for t in q_tok], dtype=np.int64)
        i_len = np.array([len(t) for t in i_tok], dtype=np.int64)
        budget = np.maximum(0, self.max_len - self.n_special - q_len)  # item tokens per query
        return PairTokens(_padded(q_tok, self.pad_id), q_len, _padded(i_tok, self.pad_id), i_len,
                          budget)

    def _batch(
        self, qs: np.ndarray, its: np.ndarray, tokens: PairTokens
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Padded input ids, token types and attention mask of the pairs (qs[r], its[r]),
        filled segment by segment with numpy rather than pair by pair in Python."""
        q_ids, i_ids = tokens.q_ids, tokens.i_ids
        pre, mid, post = (np.asarray(t, dtype=np.int64) for t in self.t_ids)
        tp, tq, tm, ti, tpost = self.t_types
        lq, li = tokens.q_len[qs], _kept(tokens, qs, its)
        q0 = np.full_like(lq, len(pre))
        m0 = q0 + lq
        i0 = m0 + len(mid)
        p0 = i0 + li
        end = p0 + len(post)
        width = int(end.max())
        ids = np.full((len(qs), width), self.pad_id, dtype=np.int64)
        types = np.zeros((len(qs), width), dtype=np.int64)
        col = np.arange(width)
        segments = (  # start column per row, length per row, ids(row, k), types(row, k)
            (np.zeros_like(q0), q0, lambda r, k: pre[k], lambda r, k: np.asarray(tp)[k]),
            (q0, lq, lambda r, k: q_ids[qs[r], k], lambda r, k: tq),
            (m0, i0 - m0, lambda r, k: mid[k], lambda r, k: np.asarray(tm)[k]),
            (i0, li, lambda r, k: i_ids[its[r], k], lambda r, k: ti),
            (p0, end - p0, lambda r, k: post[k], lambda r, k: np.asarray(tpost)[k]),
        )
        for start, length, seg_ids, seg_types in segments:
            r, c = np.nonzero((col >= start[:, None]) & (col < (start + length)[:, None]))
            k = c - start[r]
            ids[r, c] = seg_ids(r, k)
            types[r, c] = seg_types(r, k)
        mask = (col < end[:, None]).astype(np.int64)
        return ids, types, mask

    def _logits(self, ids: np.ndarray, types: np.ndarray, mask: np.ndarray) -> torch.Tensor:
        """The relevance logit of each row of a batch, float32."""
        ids_t, types_t = torch.from_numpy(ids).to(self.device), torch.from_numpy(types).to(
            self.device)
        # equal lengths: no masking
        mask_t = None if mask.all() else torch.from_numpy(mask).to(self.device)
        if self.cls_only:
            logits = self.cls_forward(ids_t, types_t, mask_t)
        else:
            inputs = {"input_ids": ids_t}
            if mask_t is not None:
                inputs["attention_mask"] = mask_t
            if self.uses_types:
                inputs["token_type_ids"] = types_t
            logits = self.model(**inputs).logits
        return logits[:, self.label].float()


def in_streams(run: Callable[[np.ndarray], None], batches: list[np.ndarray], threads: int) -> None:
    """``run`` each batch. With `threads` > 1, as that many single-threaded streams of batches
    at once (Python threads: torch releases the GIL inside its ops) rather than one batch at a
    time with `threads` cores inside each op: a batch's ops are too small to keep several cores
    busy, int8's least (side by side on the bench's pairs: about +6% for fp32 and +12-30% for
    int8, the same scores bit for bit). Each stream takes the next batch when it is free, so
    long and short batches even out. The caller's torch thread count (and the one new threads
    start with) is `threads` again afterwards."""
    if threads <= 1 or len(batches) <= 1:
        for idx in batches:
            run(idx)
        return

    def stream(idx: np.ndarray) -> None:
        if torch.get_num_threads() != 1:
            torch.set_num_threads(1)
        with torch.inference_mode():
            run(idx)

    pool = ThreadPoolExecutor(min(threads, len(batches)), thread_name_prefix="curindex-score")
    try:
        for _ in pool.map(stream, batches):  # re-raises a batch's error here
            pass
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # after an error, run no more batches
        # the streams' set_num_threads(1) also set torch's process-wide default (what new
        # threads start with): put it back
        torch.set_num_threads(threads)


def precision_option(cfg: ScorerConfig, device: str = "cpu") -> str:
    """The `options.precision` of a scorer config, validated for `device` (a torch device
    type); unset, fp32 on a CPU and fp16 on a GPU (``curindex.scoring.device``)."""
    precision = cfg.options.get("precision", default_precision(device))
    if precision not in PRECISIONS:
        raise ScorerError(
            f"[scorer] options.precision: {precision!r} is not one of {', '.join(PRECISIONS)}"
        )
    check_precision(precision, device)
    return precision


def torch_device(setting: str) -> str:
    """`setting` (``[scorer] device``, or the device a Spark task resolved) as a torch device
    string, for this process's GPUs (``curindex.scoring.device.choose_device``)."""
    return choose_device(setting, gpus=None, cuda_count=torch.cuda.device_count())


def with_precision(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """The model in the requested precision. int8 replaces the Linear layers of the encoder's
    layer stack only: the pooler and classification head see one vector per pair, cost nothing,
    and feed the score directly. In a `BertClsForward` the [CLS]-only last layer stays float
    (it runs on one row per pair) and every int8 Linear computes the [CLS] row in float."""
    if precision == "bf16":
        return model.to(torch.bfloat16)
    if precision == "fp16":
        if isinstance(model, bert.BertClsForward):  # as for int8: the [CLS] row in float32
            model.embeddings.half()
            model.layers.half()
            return model
        return model.to(torch.float16)
    if precision == "int8":
        cls_first = isinstance(model, bert.BertClsForward)
        if isinstance(model, bert.BertClsForward | bert.BertTokensForward):
            stack = model.layers
        else:
            stack = getattr(model.base_model, "encoder", model.base_model)
        for module in list(stack.modules()):
            for name, child in list(module.named_children()):
                if type(child) is torch.nn.Linear:
                    setattr(module, name, Int8Linear(child, float_first_row=cls_first))
    return model


class Int8Linear(torch.nn.Module):
    """A Linear layer with int8 weights (symmetric, one scale per output channel) and int8
    activations quantised per call over their whole range (fbgemm's dynamic quantisation).

    The full 8-bit activation range halves the rounding error of torch's quantize_dynamic
    modules, which keep 7 bits for CPUs without VNNI (lowest per-query Spearman against fp32 on
    the bench's random-weight model: 0.83 with 7 bits, 0.95 with 8). Without VNNI the kernel
    sums pairs of u8 x s8 products in 16 bits, which saturates for about 1% of the outputs of a
    384-wide layer fed symmetric activations; weights limited to 7 bits rule that out but rank
    no better on the bench (0.9981 against 0.9984 with `float_first_row`), so 8 bits stay.

    ``float_first_row``: inputs are [n, width, in] and position 0 of each row (the [CLS] token
    that a BERT classifier reads) is computed again in float, at about 1/width of the cost.
    Nearly all of the score error of int8 is activation rounding on the [CLS] token's own path:
    the other tokens reach [CLS] only through attention, which averages their errors away.
    On the bench's model this takes the lowest per-query Spearman against fp32 from 0.95 to
    0.998 for about 5% of the speed; weight rounding alone would leave it at 0.9999.
    """

    def __init__(self, linear: torch.nn.Linear, *, float_first_row: bool = False) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        bias = None if linear.bias is None else linear.bias.detach().float()
        scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12).double()
        with warnings.catch_warnings():  # quantized tensors are deprecated, not yet removed
            warnings.simplefilter("ignore")
            qw = torch.quantize_per_channel(
                w, scale, torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8
            )
            self.packed = torch.ops.quantized.linear_prepack(qw, bias)
        self.float_first_row = float_first_row
        # the float weights (shared with the Linear, not copied) for the first row
        self.weight, self.bias = (w, bias) if float_first_row else (None, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.quantized.linear_dynamic(x, self.packed, reduce_range=False)
        if self.float_first_row:
            y[:, 0] = F.linear(x[:, 0], self.weight, self.bias)
        return y


def _kept(tokens: PairTokens, qs: np.ndarray, its: np.ndarray) -> np.ndarray:
    """The item tokens each pair (qs[r], its[r]) keeps: [len(qs)]."""
    return np.minimum(tokens.i_len[its], tokens.budget[qs])


def _distinct(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The distinct texts, first seen first, and each text's place among them."""
    at: dict[str, int] = {}
    where = np.fromiter((at.setdefault(t, len(at)) for t in texts), dtype=np.int64,
                        count=len(texts))
    return list(at), where


def _padded(tokens: list[list[int]], pad: int) -> np.ndarray:
    """Token id lists as one [n, max_len] array (at least one column)."""
    out = np.full((len(tokens), max([len(t) for t in tokens] + [1])), pad, dtype=np.int64)
    for row, t in enumerate(tokens):
        out[row, : len(t)] = t
    return out
