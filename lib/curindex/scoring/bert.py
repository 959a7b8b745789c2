"""BERT checkpoints without transformers' model classes, and forwards that compute less.

Loading: `load_bert` reads a BERT checkpoint (``model_type`` "bert" in ``config.json``, weights in
``model.safetensors``: all-MiniLM-L6-v2 and the ms-marco MiniLM cross-encoders among them) into
plain torch modules with the Hugging Face parameter names and layout. transformers' model
classes import about 3 s of machinery (torch.distributed, dynamo, ...) before they read a weight,
and every Spark Python worker, the driver that encodes the queries and each query-time Searcher
would pay that on start-up; this reads the weights in milliseconds. A checkpoint it does not
load exactly (another architecture, settings these modules do not implement, weights whose names
or shapes differ) gives None, and the scorer loads it with transformers instead.

Forwards (on modules loaded either way): `BertClsForward` gives a BertForSequenceClassification's
logits and `BertTokensForward` a BertModel's last hidden states, with query, key and value fused
into one GEMM per layer; `BertClsForward` computes the last layer for the [CLS] row only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from curindex.errors import ScorerError

_ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}


@dataclass(frozen=True)
class BertSpec:
    """The settings of a BERT checkpoint that `load_bert` builds modules from (its
    ``config.json``; the names are transformers' BertConfig attributes)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    num_labels: int = 0  # classifier outputs; 0 for an encoder without a head

    @classmethod
    def from_config(cls, config: dict) -> BertSpec | None:
        """The spec of a ``config.json``, or None when the modules here do not implement it."""
        plain = (
            config.get("model_type") == "bert"
            and config.get("hidden_act", "gelu") in _ACTIVATIONS
            and _plain_encoder(config.get)
        )
        try:
            spec = cls(**{k: config[k] for k in cls.__dataclass_fields__
                          if k in config and k != "num_labels"})
        except TypeError:  # a required setting is missing
            return None
        if not plain or spec.hidden_size % spec.num_attention_heads:
            return None
        return spec


def load_bert(path: str | Path, *, classifier: bool) -> torch.nn.Module | None:
    """The BERT checkpoint in directory `path` as `LeanBertClassifier` (`classifier`: a
    BertForSequenceClassification checkpoint) or `LeanBert` (the encoder of any BERT checkpoint),
    weights in float32; None when it is not one these modules load exactly (see the module
    docstring). Reads no tokenizer. Raises ScorerError naming the file when the weights file
    cannot be read."""
    d = Path(path)
    try:
        spec = BertSpec.from_config(json.loads((d / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None
    weights = d / "model.safetensors"
    if spec is None or not weights.is_file():
        return None  # transformers reads the other layouts (pytorch_model.bin, shards)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights))
    except (OSError, SafetensorError) as e:  # a truncated or corrupt file
        raise ScorerError(f"{str(weights)!r}: cannot read the weights: {e}") from e
    state = {k: v for k, v in state.items()
             if not k.endswith(("embeddings.position_ids", "embeddings.token_type_ids"))}
    if classifier:
        head = state.get("classifier.weight")
        if head is None or head.dim() != 2:
            return None
        spec = BertSpec(**{**spec.__dict__, "num_labels": head.shape[0]})
        model: torch.nn.Module = LeanBertClassifier(spec)
    else:
        encoder = {k.removeprefix("bert."): v for k, v in state.items()
                   if not k.startswith("classifier.")}
        state = {k: v for k, v in encoder.items() if not k.startswith("pooler.")}
        model = LeanBert(spec, pooler=False)
    if set(state) != set(model.state_dict()):
        return None
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    except RuntimeError:  # a shape differs from what config.json says
        return None
    return model.eval()


def load_encoder(path: str | Path) -> tuple[torch.nn.Module, torch.nn.Module, bool]:
    """The text encoder in directory `path` (float32, eval mode): `(model, forward, fused)`, where
    `forward(ids, mask)` returns the last hidden states; `fused` when that forward is
    `BertTokensForward` over a BERT read by `load_bert`, else the model transformers loads."""
    model = load_bert(path, classifier=False)
    if model is None:  # not a BERT checkpoint curindex reads: transformers loads it
        from transformers import AutoModel

        model = complete_model(AutoModel, path, what="a text encoder")
    fused = is_plain_bert(model)
    return model, (BertTokensForward(model) if fused else model), fused


def complete_model(auto_class: type, path: str | Path, *, what: str) -> torch.nn.Module:
    """``auto_class.from_pretrained(path)`` from local files, float32, eval mode, refused with
    a ScorerError naming the parameters the checkpoint does not provide: transformers would
    initialise them at random ("newly initialized") and every score would be noise. A
    bi-encoder's folder read as a cross-encoder is the usual case (no classification head)."""
    quiet_transformers()
    model, info = auto_class.from_pretrained(str(path), local_files_only=True,
                                             dtype=torch.float32, output_loading_info=True)
    missing = sorted(info.get("missing_keys") or ())
    mismatched = sorted(str(k[0] if isinstance(k, tuple) else k)
                        for k in info.get("mismatched_keys") or ())
    if missing or mismatched:
        names = missing + mismatched
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        raise ScorerError(
            f"[scorer] path {str(path)!r}: the checkpoint does not provide every weight of "
            f"{what} ({type(model).__name__}): {shown} would be initialised at random. "
            "Point [scorer] path at a checkpoint trained for this kind (a cross-encoder needs "
            "a sequence-classification head; a bi-encoder such as all-MiniLM-L6-v2 is the "
            "maxsim-minilm kind)")
    return model.eval()


def quiet_transformers() -> None:
    """No progress bar from transformers' model loading (one per load floods executor logs)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _node(**children: torch.nn.Module) -> torch.nn.Module:
    """A module that only holds named children (the Hugging Face nesting)."""
    node = torch.nn.Module()
    for name, child in children.items():
        node.add_module(name, child)
    return node


class _Embeddings(torch.nn.Module):
    def __init__(self, s: BertSpec) -> None:
        super().__init__()
        self.word_embeddings = torch.nn.Embedding(s.vocab_size, s.hidden_size)
        self.position_embeddings = torch.nn.Embedding(s.max_position_embeddings, s.hidden_size)
        self.token_type_embeddings = torch.nn.Embedding(s.type_vocab_size, s.hidden_size)
        self.LayerNorm = torch.nn.LayerNorm(s.hidden_size, eps=s.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        types = (self.token_type_embeddings.weight[0] if token_type_ids is None
                 else self.token_type_embeddings(token_type_ids))
        x = self.word_embeddings(input_ids) + types
        x += self.position_embeddings.weight[: input_ids.shape[1]]
        return self.LayerNorm(x)


class _Pooler(torch.nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.dense = torch.nn.Linear(hidden, hidden)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden_states[:, 0]))


def _layer(s: BertSpec) -> torch.nn.Module:
    h, heads, ffn = s.hidden_size, s.num_attention_heads, s.intermediate_size
    att = _node(query=torch.nn.Linear(h, h), key=torch.nn.Linear(h, h),
                value=torch.nn.Linear(h, h))
    att.num_attention_heads, att.attention_head_size = heads, h // heads
    att.scaling = (h // heads) ** -0.5
    intermediate = _node(dense=torch.nn.Linear(h, ffn))
    intermediate.intermediate_act_fn = _ACTIVATIONS[s.hidden_act]
    return _node(
        attention=_node(self=att, output=_node(
            dense=torch.nn.Linear(h, h), LayerNorm=torch.nn.LayerNorm(h, eps=s.layer_norm_eps))),
        intermediate=intermediate,
        output=_node(dense=torch.nn.Linear(ffn, h),
                     LayerNorm=torch.nn.LayerNorm(h, eps=s.layer_norm_eps)),
    )


class LeanBert(torch.nn.Module):
    """A BERT encoder's modules (the weights of transformers' BertModel, under the same names).
    It has no forward of its own: `BertTokensForward` and `BertClsForward` run it."""

    def __init__(self, spec: BertSpec, *, pooler: bool) -> None:
        super().__init__()
        self.config = spec
        self.embeddings = _Embeddings(spec)
        self.encoder = _node(layer=torch.nn.ModuleList(
            _layer(spec) for _ in range(spec.num_hidden_layers)))
        self.pooler = _Pooler(spec.hidden_size) if pooler else None


class LeanBertClassifier(torch.nn.Module):
    """A BertForSequenceClassification's modules, run by `BertClsForward`."""

    def __init__(self, spec: BertSpec) -> None:
        super().__init__()
        self.config = spec
        self.bert = LeanBert(spec, pooler=True)
        self.classifier = torch.nn.Linear(spec.hidden_size, spec.num_labels)


def is_plain_bert(model: torch.nn.Module) -> bool:
    """Whether `BertClsForward` (for a classifier) or `BertTokensForward` (for an encoder)
    computes exactly what this model's own forward does."""
    if isinstance(model, LeanBert | LeanBertClassifier):
        return True
    name = type(model).__name__
    if name not in ("BertForSequenceClassification", "BertModel"):
        return False
    return (
        type(model).__module__.startswith("transformers.")
        and _plain_encoder(lambda key, default: getattr(model.config, key, default))
        and (name == "BertModel" or model.bert.pooler is not None)
    )


def _plain_encoder(setting) -> bool:
    """Whether BERT settings (`setting(name, default)`) describe the plain encoder the
    forwards here compute: no decoder, cross-attention, chunked feed-forward or relative
    positions."""
    return (
        not setting("is_decoder", False)
        and not setting("add_cross_attention", False)
        and not setting("chunk_size_feed_forward", 0)
        and setting("position_embedding_type", "absolute") == "absolute"
    )


class BertTokensForward(torch.nn.Module):
    """A BERT encoder's last hidden states, with query, key and value fused into one GEMM per
    layer (the encoder's own embeddings, LayerNorms and other Linear layers are shared). Equal
    to transformers' BertModel forward to float32 rounding."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        gelu = model.config.hidden_act == "gelu"
        self.embeddings = model.embeddings
        self.layers = torch.nn.ModuleList(
            _EncoderLayer(layer, gelu=gelu) for layer in model.encoder.layer
        )

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Hidden states [n, width, hidden] of token ids and attention mask, both [n, width]
        (mask None: no padding)."""
        h = self.embeddings(input_ids=ids)
        attn_mask = None if mask is None else mask[:, None, None, :].bool()
        for layer in self.layers:
            h = layer(h, attn_mask)
        return h


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
        # the [CLS]-only last layer may run in a wider type than the others (fp16 on a GPU)
        h = h.to(self.last.value_b.dtype)
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
