"""Scorers: the Scorer protocol and per-worker cache (`base`), the table of kinds (`registry`),
and the implementations (`maxsim`, `cross_encoder`, `toy`; BERT checkpoints and tokenizers read
by `bert` and `tokens`). Import from the submodules: this package imports nothing, so reading
the kinds table never loads a model library."""
