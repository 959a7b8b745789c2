"""Spark stages of the index build; ``run_build`` runs them all, ``run_stage`` one."""

from curindex.build.pipeline import (
    STAGES,
    BuildResult,
    new_version_id,
    publish_version,
    run_build,
    run_stage,
)

__all__ = [
    "STAGES",
    "BuildResult",
    "new_version_id",
    "publish_version",
    "run_build",
    "run_stage",
]
