"""One Top-k-Recall@budget figure, named ``"k@budget"`` everywhere: configs, manifests, reports.

``Figure.parse("10@200")`` is Top-10-Recall at a budget of 200 exact-model calls per query;
figures sort by budget, then k.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Figure:
    budget: int  # exact-model calls per query (first: figures sort by budget, then k)
    k: int

    @classmethod
    def parse(cls, name: str) -> Figure:
        """The figure a "k@budget" name stands for; ValueError naming it when malformed."""
        k, sep, budget = str(name).partition("@")
        if not (sep and k.isdigit() and budget.isdigit()) or int(k) < 1:
            raise ValueError(f"{name!r} is not a figure name: expected 'k@budget', e.g. '10@200'")
        return cls(budget=int(budget), k=int(k))

    def __str__(self) -> str:
        return f"{self.k}@{self.budget}"

    @property
    def label(self) -> str:
        return f"Top-{self.k}-Recall@{self.budget}"


def figure_grid(ks: Iterable[int], budgets: Iterable[int], *, min_budget: int = 0
                ) -> list[Figure]:
    """The figures that make sense, sorted: k < budget and budget > `min_budget`."""
    return sorted(Figure(budget=b, k=k) for b in set(budgets) for k in set(ks)
                  if k < b and b > min_budget)


def by_figure(values: dict[str, float]) -> list[tuple[Figure, float]]:
    """(figure, value) pairs of a {"k@budget": value} table, sorted by figure."""
    return sorted((Figure.parse(name), v) for name, v in values.items())


def names(figures: Sequence[Figure]) -> list[str]:
    return [str(f) for f in figures]
