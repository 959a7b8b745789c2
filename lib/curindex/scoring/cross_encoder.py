"""`cross-encoder`: any Hugging Face AutoModelForSequenceClassification in a local directory.

Each query and each item of a block is tokenised once; pair inputs are assembled from token
ids with the tokenizer's own special-token template (learnt from one probe pair, so BERT's
``[CLS] q [SEP] i [SEP]`` and RoBERTa's ``<s> q </s></s> i </s>`` both work). Pairs are sorted
by length so each forward batch carries little padding, and a batch of equal lengths runs
without an attention mask. The score is the logit of ``options.label_index`` (default 0; a
model with several labels must name one).

BERT classifiers (the ms-marco MiniLM cross-encoders among them) run `BertClsForward`: query,
key and value projections fused into one GEMM per layer, and the last layer computed for the
``[CLS]`` position only, with its keys and values folded into the query (the classifier reads
nothing else), so the scores are the model's own (to float rounding) at about 17% fewer FLOPs.
Other architectures run the model's own forward. The time goes to the GEMMs (about 80% of it,
near the CPU's peak FLOP rate; `bench/scoring.py --profile` shows it), so what a batch does not
compute matters more than how: little padding and no keys and values for the last layer.

``options.precision``: ``fp32`` (default); ``int8`` (the encoder layers' Linear layers with
int8 weights and dynamically quantised int8 activations, the [CLS] row in float: the fast path
on x86 CPUs, see `Int8Linear`); ``bf16`` (for CPUs with native bf16, AVX512-BF16 or AMX; slower
than fp32 on others). Both change the scores slightly and, like every option, the scorer
fingerprint.

Truncation: a query keeps at most ``max_query_tokens`` content tokens; the item gets the rest of
``max_query_tokens + max_item_tokens`` (and of the model's own maximum length), special tokens
included.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from curindex.config import ScorerConfig
from curindex.errors import ScorerError

PRECISIONS = ("fp32", "int8", "bf16")


class CrossEncoderScorer:
    def __init__(self, cfg: ScorerConfig, *, fingerprint: str) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.fingerprint = fingerprint
        self.cfg = cfg
        self.precision = precision_option(cfg)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(cfg.path, local_files_only=True)
            model = AutoModelForSequenceClassification.from_pretrained(
                cfg.path, local_files_only=True
            ).eval()
        except (OSError, ValueError) as e:
            raise ScorerError(f"[scorer] path {cfg.path!r}: cannot load a model: {e}") from e
        n_labels = model.config.num_labels
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
        model_max = int(getattr(model.config, "max_position_embeddings", 512))
        tok_max = int(getattr(self.tokenizer, "model_max_length", model_max) or model_max)
        self.max_len = min(model_max, tok_max, cfg.max_query_tokens + cfg.max_item_tokens)
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.uses_types = "token_type_ids" in self.tokenizer.model_input_names
        self.cls_only = _is_plain_bert_classifier(model)
        # BERT classifiers run `BertClsForward` in the requested precision (it shares the
        # model's submodules: bf16 converts those too); other models run their own forward.
        self.model = model if self.cls_only else with_precision(model, self.precision)
        self.cls_forward = (
            with_precision(BertClsForward(model), self.precision) if self.cls_only else None
        )

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
        n_q, n_i = len(queries), len(items)
        if n_q == 0 or n_i == 0:
            return np.zeros((n_q, n_i), dtype=np.float32)
        plan = self._plan(self._content(queries), self._content(items))
        q_len, i_kept = plan[1], plan[3]
        lengths = (self.n_special + q_len[:, None] + i_kept).reshape(-1)  # query-major
        # Longest first: the first batch allocates the largest activations, and the later ones
        # reuse that memory from the heap. Growing batches would each get fresh pages from the
        # OS (above glibc's mmap threshold), which costs several percent of the forward time.
        order = np.argsort(-lengths, kind="stable")
        out = np.empty(n_q * n_i, dtype=np.float32)
        for start in range(0, len(order), self.cfg.batch_size):
            idx = order[start : start + self.cfg.batch_size]
            out[idx] = self._logits(*self._batch(idx // n_i, idx % n_i, *plan)).numpy()
        return out.reshape(n_q, n_i)

    def _plan(
        self, q_tok: list[list[int]], i_tok: list[list[int]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Query token ids [n_q, w] and lengths [n_q] after truncation, item token ids
        [n_i, w'], and the item tokens each pair keeps [n_q, n_i]."""
        q_tok = [t[: self.cfg.max_query_tokens] for t in q_tok]
        i_tok = [t[: self.max_len] for t in i_tok]
        q_len = np.array([len(t) for t in q_tok], dtype=np.int64)
        i_len = np.array([len(t) for t in i_tok], dtype=np.int64)
        budget = np.maximum(0, self.max_len - self.n_special - q_len)  # item tokens per query
        i_kept = np.minimum(i_len[None, :], budget[:, None])
        return _padded(q_tok, self.pad_id), q_len, _padded(i_tok, self.pad_id), i_kept

    def _batch(
        self,
        qs: np.ndarray,
        its: np.ndarray,
        q_ids: np.ndarray,
        q_len: np.ndarray,
        i_ids: np.ndarray,
        i_kept: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Padded input ids, token types and attention mask of the pairs (qs[r], its[r]),
        filled segment by segment with numpy rather than pair by pair in Python."""
        pre, mid, post = (np.asarray(t, dtype=np.int64) for t in self.t_ids)
        tp, tq, tm, ti, tpost = self.t_types
        lq, li = q_len[qs], i_kept[qs, its]
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
        ids_t, types_t = torch.from_numpy(ids), torch.from_numpy(types)
        mask_t = None if mask.all() else torch.from_numpy(mask)  # equal lengths: no masking
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


def precision_option(cfg: ScorerConfig) -> str:
    """The `options.precision` of a scorer config, validated."""
    precision = cfg.options.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise ScorerError(
            f"[scorer] options.precision: {precision!r} is not one of {', '.join(PRECISIONS)}"
        )
    return precision


def with_precision(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """The model in the requested precision. int8 replaces the Linear layers of the encoder's
    layer stack only: the pooler and classification head see one vector per pair, cost nothing,
    and feed the score directly. In a `BertClsForward` the [CLS]-only last layer stays float
    (it runs on one row per pair) and every int8 Linear computes the [CLS] row in float."""
    if precision == "bf16":
        return model.to(torch.bfloat16)
    if precision == "int8":
        cls_first = isinstance(model, BertClsForward)
        if cls_first:
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


def _padded(tokens: list[list[int]], pad: int) -> np.ndarray:
    """Token id lists as one [n, max_len] array (at least one column)."""
    out = np.full((len(tokens), max([len(t) for t in tokens] + [1])), pad, dtype=np.int64)
    for row, t in enumerate(tokens):
        out[row, : len(t)] = t
    return out


def _is_plain_bert_classifier(model: torch.nn.Module) -> bool:
    """Whether `BertClsForward` computes exactly what this model's forward does."""
    from transformers import BertForSequenceClassification

    c = model.config
    return (
        type(model) is BertForSequenceClassification
        and not c.is_decoder
        and not getattr(c, "add_cross_attention", False)
        and not getattr(c, "chunk_size_feed_forward", 0)
        and getattr(c, "position_embedding_type", "absolute") == "absolute"
        and model.bert.pooler is not None
    )


class BertClsForward(torch.nn.Module):
    """BertForSequenceClassification's logits, computing only what its classifier reads.

    Shares the model's embeddings, LayerNorms, pooler and classifier (and the Linear layers
    other than query/key/value, which it fuses into one [3 * hidden, hidden] Linear per layer so
    that each layer starts with one GEMM instead of three). The last layer computes the [CLS]
    row only, with its keys and values folded into the query (see `_ClsLayer`). Equal to the
    model's forward to float32 rounding (about 1e-7 on a MiniLM-sized model).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        bert = model.bert
        gelu = model.config.hidden_act == "gelu"
        self.embeddings = bert.embeddings
        self.layers = torch.nn.ModuleList(
            _EncoderLayer(layer, gelu=gelu) for layer in bert.encoder.layer[:-1]
        )
        self.last = _ClsLayer(bert.encoder.layer[-1], gelu=gelu)
        self.pooler, self.classifier = bert.pooler, model.classifier

    def forward(
        self, ids: torch.Tensor, types: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Logits [n, labels] of token ids, token types and attention mask, all [n, width]
        (mask None: no padding)."""
        h = self.embeddings(input_ids=ids, token_type_ids=types)  # [n, width, hidden]
        attn_mask = None if mask is None else mask[:, None, None, :].bool()
        for layer in self.layers:
            h = layer(h, attn_mask)
        cls = self.last(h, None if mask is None else mask.bool())  # [n, hidden]
        return self.classifier(self.pooler(cls[:, None]))


class _Feedforward(torch.nn.Module):
    """The output half of a BERT layer: attention output projection, residual, LayerNorm,
    then the feed-forward block, residual, LayerNorm."""

    def __init__(self, layer: torch.nn.Module, *, gelu: bool) -> None:
        super().__init__()
        self.out, self.ln1 = layer.attention.output.dense, layer.attention.output.LayerNorm
        self.up, self.down = layer.intermediate.dense, layer.output.dense
        self.ln2 = layer.output.LayerNorm
        # GELU in place: the FFN's widest tensor is then allocated once, not twice
        self.act = torch.ops.aten.gelu_ if gelu else layer.intermediate.intermediate_act_fn

    def forward(self, ctx: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = self.ln1(_linear_plus(self.out, ctx, x))
        return self.ln2(_linear_plus(self.down, self.act(self.up(x)), x))


def _linear_plus(linear: torch.nn.Module, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """``linear(x) + residual``. A float Linear accumulates its product into ``residual +
    bias`` (one GEMM with beta = 1), which saves a pass over the output: F.linear would first
    copy the bias into it and the sum would be a second one."""
    if type(linear) is torch.nn.Linear and linear.bias is not None:
        y = residual + linear.bias
        y.view(-1, y.shape[-1]).addmm_(x.reshape(-1, x.shape[-1]), linear.weight.t())
        return y
    y = linear(x)
    y += residual  # the Linear's output is a fresh tensor: adding in place is safe
    return y


class _EncoderLayer(_Feedforward):
    def __init__(self, layer: torch.nn.Module, *, gelu: bool) -> None:
        super().__init__(layer, gelu=gelu)
        att = layer.attention.self
        self.heads, self.size, self.scaling = (
            att.num_attention_heads, att.attention_head_size, att.scaling
        )
        parts = (att.query, att.key, att.value)
        self.qkv = torch.nn.Linear(parts[0].in_features, sum(p.out_features for p in parts))
        with torch.no_grad():
            self.qkv.weight.copy_(torch.cat([p.weight for p in parts]))
            self.qkv.bias.copy_(torch.cat([p.bias for p in parts]))

    def forward(self, h: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        n, width, hidden = h.shape
        qkv = self.qkv(h).view(n, width, 3, self.heads, self.size)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [n, heads, width, size]
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scaling)
        return super().forward(ctx.transpose(1, 2).reshape(n, width, hidden), h)


class _ClsLayer(_Feedforward):
    """A BERT layer's output at the [CLS] position only, its keys and values never formed.

    Per head, ``q . (Wk h_j + bk) = (Wk^T q) . h_j + q . bk``: the second term is the same for
    every position j and cancels in the softmax. And since the weights p_j sum to one,
    ``sum_j p_j (Wv h_j + bv) = Wv (sum_j p_j h_j) + bv``. So the layer costs two
    [heads, hidden] x [hidden, width] products per pair instead of two [width, hidden] x
    [hidden, hidden] projections.
    """

    def __init__(self, layer: torch.nn.Module, *, gelu: bool) -> None:
        super().__init__(layer, gelu=gelu)
        att = layer.attention.self
        self.heads, self.size, self.scaling = (
            att.num_attention_heads, att.attention_head_size, att.scaling
        )
        self.query = att.query
        hidden = att.key.in_features
        self.register_buffer("key_w", att.key.weight.detach().view(self.heads, self.size, hidden))
        self.register_buffer(
            "value_w", att.value.weight.detach().view(self.heads, self.size, hidden)
        )
        self.register_buffer("value_b", att.value.bias.detach())

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        n, hidden = h.shape[0], h.shape[2]
        x = h[:, 0]  # [n, hidden]
        q = self.query(x).view(n, self.heads, self.size)
        qk = torch.einsum("nhd,hdc->nhc", q * self.scaling, self.key_w)  # [n, heads, hidden]
        s = torch.bmm(qk, h.transpose(1, 2))  # [n, heads, width]
        if mask is not None:
            s = s.masked_fill(~mask[:, None, :], float("-inf"))
        pooled = torch.bmm(s.softmax(-1), h)  # [n, heads, hidden]
        ctx = torch.einsum("nhc,hdc->nhd", pooled, self.value_w).reshape(n, hidden)
        return super().forward(ctx + self.value_b, x)
