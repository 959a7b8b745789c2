"""Search methods, pure numpy: one implementation of every way curindex spends a query's budget,
run by the Searcher over faiss shards and by the build's validation over Spark partitions, so
that the figures a build records are what the Searcher returns.

Every method spends ``budget`` exact-model calls per query in rounds. A round retrieves the
best items not yet scored by an estimate in one of three spaces and scores them exactly:

- ``"e"``: the item vectors ``e = G h`` with the query's exact scores on the anchor items ``c``
  (plain CUR, ANNCUR);
- ``"h"``: the items' anchor-query scores ``h`` with the query's weights ``w``, re-solved before
  each round on every item scored so far (``w = lstsq(H_A^T, s_A)``; adaptive, ADACUR);
- ``"bi"``: bi-encoder embeddings with the query's bi-encoder embedding;
- ``"hb"``: both side by side. With ``cos``, the bi-seeded method's later rounds re-solve on
  one more feature, the bi-encoder similarity of the query with each item scored so far, so the
  query's weights are ``(w, beta)`` and the next items are the best by ``w . h + beta
  bi_q . bi``: an inner product over ``[h, bi]`` with ``[w, beta bi_q]``.

The methods (``SearchSpec``):

| method | round 1 | later rounds |
|---|---|---|
| ``cur`` | the k_i anchor items, then ``budget - k_i`` items by ``c . e`` | none |
| ``adaptive`` | as ``cur``, with ``(budget - k_i) / rounds`` items | ``h``, re-solved |
| ``bi-seeded`` | the bi-encoder's top ``seed_size`` items | ``h``, re-solved |
| ``bi-rerank`` | the bi-encoder's top ``budget`` items | none |

Items are opaque hashable keys (faiss labels in the Searcher, item ids in validation); a
``Retriever`` hides the index and the model. Ties in an estimate are broken by the retriever
(both break them by item id).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

METHODS = ("bi-rerank", "cur", "adaptive", "bi-seeded")  # simplest first
# The extra indexes of a version each method needs ("h": anchor-query scores, "bi": bi-encoder
# embeddings); plain CUR needs only the item vectors.
NEEDS = {"cur": (), "adaptive": ("h",), "bi-seeded": ("h", "bi"), "bi-rerank": ("bi",)}
SEEDS = ("anchors", "bi-encoder")


def needed_extras(methods: Sequence[str]) -> tuple[str, ...]:
    """The extra indexes ("h", then "bi") that a version serving `methods` needs."""
    need = {n for m in methods for n in NEEDS[m]}
    return tuple(n for n in ("h", "bi") if n in need)

Key = Hashable


@dataclass(frozen=True, order=True)
class SearchSpec:
    """A way to search, without its budget: the method and its parameters."""

    method: str
    rounds: int = 1
    seed_size: int = 0  # bi-seeded: the items of round 1

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        multi = self.method in ("adaptive", "bi-seeded")
        if self.rounds < 1 or (multi and self.rounds < 2) or (not multi and self.rounds != 1):
            raise ValueError(f"{self.method}: rounds {self.rounds} (adaptive and bi-seeded take "
                             "2 or more, cur and bi-rerank 1)")
        if (self.method == "bi-seeded") != (self.seed_size > 0):
            raise ValueError(f"{self.method}: seed_size {self.seed_size} (bi-seeded needs a "
                             "positive seed size, the others none)")

    @classmethod
    def from_args(cls, *, rounds: int = 1, seed: str = "anchors", seed_size: int = 0
                  ) -> SearchSpec:
        """The spec of `Searcher.search`'s explicit arguments (rounds, seed, seed_size)."""
        if seed not in SEEDS:
            raise ValueError(f"seed must be one of {SEEDS}, got {seed!r}")
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        if seed == "anchors":
            return cls("cur") if rounds == 1 else cls("adaptive", rounds)
        if rounds == 1:
            return cls("bi-rerank")
        return cls("bi-seeded", rounds, seed_size or 50)

    @property
    def seed(self) -> str:
        return "bi-encoder" if self.method.startswith("bi-") else "anchors"

    @property
    def needs(self) -> tuple[str, ...]:
        return NEEDS[self.method]

    @property
    def complexity(self) -> tuple[int, int, int]:
        """Simplest first: the method's place in METHODS, then fewer rounds, smaller seeds."""
        return METHODS.index(self.method), self.rounds, self.seed_size

    def describe(self) -> str:
        if self.method == "adaptive":
            return f"adaptive ({self.rounds} rounds)"
        if self.method == "bi-seeded":
            return f"bi-seeded ({self.rounds} rounds, seed {self.seed_size})"
        return self.method

    def sizes(self, budget: int, *, k_i: int, n_items: int, n_anchors_listed: int) -> list[int]:
        """Items retrieved per round at `budget` (the anchor items, for methods that score
        them, are not counted here: they cost k_i of the budget). `n_anchors_listed`: anchor
        items that are also items of the index (never retrieved by anchor-seeded methods)."""
        if self.seed == "anchors":
            if budget <= k_i:
                raise ValueError(f"budget {budget} must exceed the {k_i} anchor items of this "
                                 "index")
            return round_sizes(min(budget - k_i, n_items - n_anchors_listed), self.rounds)
        total = min(budget, n_items)
        if self.rounds == 1:
            return [total]
        first = min(self.seed_size, total)
        return [first, *round_sizes(total - first, self.rounds - 1)]


def round_sizes(n: int, rounds: int) -> list[int]:
    """`n` retrievals split over `rounds` rounds, as evenly as possible, larger rounds first."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    base, extra = divmod(max(n, 0), rounds)
    return [base + (1 if r < extra else 0) for r in range(rounds)]


GRAM_RCOND = 1e-6  # at or above this cutoff, the weights are solved from the Gram matrix


def query_weights(h_a: np.ndarray, s_a: np.ndarray, *, rcond: float) -> np.ndarray:
    """The query's vector in anchor-query space.

    h_a: [k_q, m] anchor-query scores of the m exactly scored items; s_a: [m] the query's
    exact scores on them. Returns the minimum-norm w [k_q] minimising ``||h_a^T w - s_a||``
    with singular values of ``h_a`` <= rcond * max dropped: ``pinv(h_a^T) s_a``.

    From the eigendecomposition of the smaller Gram matrix (``h_a^T h_a`` or ``h_a h_a^T``),
    about twice as fast as an SVD; squaring the singular values costs their accuracy below
    about 1e-8 of the largest, so a cutoff under ``GRAM_RCOND`` takes the SVD
    (``numpy.linalg.lstsq``) instead.
    """
    a = np.asarray(h_a, np.float64).T  # [m, k_q]
    s = np.asarray(s_a, np.float64)
    if rcond < GRAM_RCOND or 0 in a.shape:
        return np.linalg.lstsq(a, s, rcond=rcond)[0]
    m, k_q = a.shape
    gram = a @ a.T if m <= k_q else a.T @ a
    evals, evecs = np.linalg.eigh(gram)  # sigma^2, ascending
    keep = evals > (rcond * np.sqrt(max(evals[-1], 0.0))) ** 2
    v, e = evecs[:, keep], evals[keep]
    if m <= k_q:  # a = U S V^T, gram = U S^2 U^T: pinv(a) s = a^T U S^-2 U^T s
        return a.T @ (v @ ((v.T @ s) / e))
    return v @ ((v.T @ (a.T @ s)) / e)  # gram = V S^2 V^T: pinv(a) s = V S^-2 V^T a^T s


def prior_weights(h_a: np.ndarray, s_a: np.ndarray, *, prior: np.ndarray, weight: float
                  ) -> np.ndarray:
    """The query's vector pulled toward a prior: ``argmin ||h_a^T w - s_a||^2 + weight
    ||w - prior||^2`` (a sparse version's rounds: the prior is the query map of its
    bi-encoder embedding). h_a: [d, m]; s_a: [m]; prior: [d]; weight > 0. Solved in the
    smaller of the two spaces (m x m or d x d)."""
    a = np.asarray(h_a, np.float64).T  # [m, d]
    w0 = np.asarray(prior, np.float64)
    r = np.asarray(s_a, np.float64) - a @ w0
    m, d = a.shape
    if m <= d:
        return w0 + a.T @ np.linalg.solve(a @ a.T + weight * np.eye(m), r)
    return w0 + np.linalg.solve(a.T @ a + weight * np.eye(d), a.T @ r)


# One re-solve: (h_a [d, m], s_a [m], prior [d] or None: pinv with the cutoff, else ridge)
Problem = tuple[np.ndarray, np.ndarray, np.ndarray | None]


def solve_all(problems: Sequence[Problem], *, rcond: float, prior_weight: float = 0.0,
              workers: int = 1) -> list[np.ndarray]:
    """`query_weights` (or `prior_weights`, for a problem with a prior) of many problems,
    each on one BLAS thread (small problems run many times slower when BLAS threads contend
    for the cores), `workers` at a time."""
    from threadpoolctl import threadpool_limits

    def solve(p: Problem) -> np.ndarray:
        h, s, prior = p
        if prior is None:
            return query_weights(h, s, rcond=rcond)
        return prior_weights(h, s, prior=prior, weight=prior_weight)

    with threadpool_limits(1, user_api="blas"):
        if workers <= 1 or len(problems) < 2:
            return [solve(p) for p in problems]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers, thread_name_prefix="curindex-solve") as pool:
            return list(pool.map(solve, problems))


@dataclass(frozen=True)
class Ask:
    """One retrieval of one round: the `n` best items by `vector`'s inner product in `space`,
    leaving out `seen`, for query number `query` of the batch."""

    query: int
    space: str  # "e", "h", "bi" or "hb"
    vector: np.ndarray
    n: int
    seen: frozenset


class Retriever(Protocol):
    def retrieve(self, asks: Sequence[Ask]) -> list[tuple[list[Key], np.ndarray]]:
        """Per ask: the keys found, best first, and their exact scores for its query."""
        ...

    def columns(self, keys: Sequence[Key]) -> dict[Key, np.ndarray]:
        """Each key's item's anchor-query scores [k_q] as the adaptive rounds read them,
        followed by its bi-encoder embedding where the version stores both together."""
        ...


@dataclass
class Plan:
    """One query's search under one spec and budget, and what it has scored so far."""

    query: int
    spec: SearchSpec
    budget: int
    sizes: list[int]
    first: np.ndarray  # round 1's vector: c (anchor-seeded) or the bi-encoder embedding
    anchor_exact: np.ndarray  # [k_i] exact scores on the anchor items (empty: bi-seeded)
    excluded: frozenset  # never retrieved: the anchor items of anchor-seeded methods
    keys: list[Key] = field(default_factory=list)
    exact: list[float] = field(default_factory=list)
    # a sparse version's query prior [d] (empty: a dense version's unconstrained re-solve)
    prior: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass(frozen=True)
class Latent:
    """A sparse version's re-solve: exact scores rescaled ``beta (s - alpha)`` onto the latent
    scale, then pulled toward each plan's prior with `weight`."""

    alpha: float
    beta: float
    weight: float


def run_plans(plans: Sequence[Plan], retriever: Retriever, *, anchor_columns: np.ndarray | None,
              rcond: float, workers: int = 1, cos: bool = False,
              latent: Latent | None = None) -> None:
    """Run every plan's rounds in lockstep (one `retrieve` call per round for all of them);
    fills each plan's keys (retrieval order) and exact scores.

    anchor_columns: [k_q, k_i] anchor-query scores of the anchor items (None when no plan
    has later rounds); `workers`: threads that re-solve the plans' weights; `cos`: the
    bi-seeded method's later rounds add the bi-encoder similarity as a feature (see the
    module docstring; the retriever's columns then carry the bi-encoder embeddings);
    `latent`: a sparse version's rounds (the plans carry their priors)."""
    for r in range(max((len(p.sizes) for p in plans), default=0)):
        active = [p for p in plans if len(p.sizes) > r and p.sizes[r] > 0]
        if not active:
            continue
        if r == 0:
            asks = [_first_ask(p, p.sizes[0], p.excluded) for p in active]
        else:
            asks = _resolve(active, retriever, anchor_columns, rcond, r, workers, cos, latent)
        for p, (keys, exact) in zip(active, retriever.retrieve(asks), strict=True):
            p.keys += list(keys)
            p.exact += [float(x) for x in exact]


def deeper_asks(plans: Sequence[Plan], n: int, retriever: Retriever, *,
                anchor_columns: np.ndarray | None, rcond: float, workers: int = 1,
                cos: bool = False, latent: Latent | None = None) -> list[Ask]:
    """Per plan that ran, the ask for its next `n` items after everything it scored: a
    multi-round plan's weights re-solved on all of it (one more round), plain CUR's and
    the bi-encoder rerank's round-1 vector (its ranking, read further)."""
    multi = [replace(p, sizes=[*p.sizes, n]) for p in plans if len(p.sizes) > 1]
    out = _resolve(multi, retriever, anchor_columns, rcond, -1, workers, cos, latent) \
        if multi else []  # round -1: each extended plan's last size, n
    return out + [_first_ask(p, n, p.excluded | frozenset(p.keys))
                  for p in plans if len(p.sizes) == 1]


def _first_ask(p: Plan, n: int, seen: frozenset) -> Ask:
    """Round 1's retrieval of `n` items by the plan's first vector: the CUR estimate
    (anchor-seeded) or the bi-encoder."""
    return Ask(p.query, "e" if p.spec.seed == "anchors" else "bi", p.first, n, seen)


def _resolve(active: Sequence[Plan], retriever: Retriever, anchor_columns: np.ndarray | None,
             rcond: float, r: int, workers: int, cos: bool, latent: Latent | None
             ) -> list[Ask]:
    """The asks of round r > 0: each plan's weights re-solved on what it scored so far."""
    if anchor_columns is None:
        raise ValueError("adaptive rounds need the anchor items' anchor-query scores")
    k_q = anchor_columns.shape[0]
    wanted = list(dict.fromkeys(k for p in active for k in p.keys))
    cols = retriever.columns(wanted)
    problems, spaces = [], []
    for p in active:
        x_a = np.stack([cols[k] for k in p.keys], axis=1) if p.keys else np.zeros((k_q, 0))
        h_a = x_a[:k_q]
        with_cos = cos and p.spec.method == "bi-seeded"
        if with_cos:  # one more feature: the query's bi-encoder similarity with each item
            h_a = np.vstack([h_a, p.first @ x_a[k_q:]])
        if p.spec.seed == "anchors":
            h_a = np.hstack([anchor_columns, h_a])
        s_a = np.concatenate([p.anchor_exact, p.exact])
        prior = None
        if latent is not None:  # the prior of the cosine feature's weight is 0
            s_a = latent.beta * (s_a - latent.alpha)
            prior = np.concatenate([p.prior, [0.0]]) if with_cos else p.prior
        problems.append((h_a, s_a, prior))
        spaces.append("hb" if with_cos else "h")
    weights = solve_all(problems, rcond=rcond, workers=workers,
                        prior_weight=latent.weight if latent is not None else 0.0)
    return [Ask(p.query, space,
                np.concatenate([w[:k_q], w[k_q] * p.first]) if space == "hb" else w,
                p.sizes[r], p.excluded | frozenset(p.keys))
            for p, w, space in zip(active, weights, spaces, strict=True)]


def ranked(pool_keys: Sequence[Key], pool_exact: np.ndarray, k: int
           ) -> tuple[list[Key], np.ndarray]:
    """The top k of a pool by exact score, ties in pool order (the Searcher's answer)."""
    s = np.asarray(pool_exact, dtype=np.float32)
    top = np.argsort(-s, kind="stable")[:k]
    return [pool_keys[i] for i in top], s[top]
