"""Input sources that need no Spark: the embedded demo corpus."""
