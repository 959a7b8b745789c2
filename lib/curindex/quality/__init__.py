"""Measuring and choosing: recall figures, what validation runs and its table, the choice of
the served search, and the quality gate (pure numpy)."""
