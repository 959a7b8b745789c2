"""The build's stages, in order; each module's ``run(ctx)`` returns its state and the files it
wrote (commit: the manifest)."""

from curindex.pipeline.stages import commit, factorize, prepare, score, validate, write_shards

STAGES = {"prepare": prepare.run, "score": score.run, "factorize": factorize.run,
          "write_shards": write_shards.run, "validate": validate.run, "commit": commit.run}

__all__ = ["STAGES"]
