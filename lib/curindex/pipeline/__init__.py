"""The Spark build: stages over a build context (``run_build`` runs them all, ``run_stage``
one). The only package of curindex that imports pyspark."""

from curindex.pipeline.run import BuildResult, new_version_id, run_build, run_stage
from curindex.pipeline.stages import STAGES

__all__ = ["STAGES", "BuildResult", "new_version_id", "run_build", "run_stage"]
