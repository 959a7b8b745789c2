"""Which scorer a reader may build from a version's manifest: a manifest is data anyone with
write access to the store can edit, so nothing in it may choose code to run."""

from __future__ import annotations

import dataclasses
import os

from curindex.config import ScorerConfig, scorer_from_dict
from curindex.errors import ConfigError, ScorerError

# Where a reader lists the `module:callable` scorer targets it allows (comma-separated).
ALLOWED_TARGETS_ENV = "CURINDEX_ALLOWED_SCORERS"


def trusted_scorer_config(recorded: dict, *, version: str, scorer_target: str | None = None
                          ) -> ScorerConfig:
    """The scorer config a reader may build from a manifest's recorded `[scorer]` settings.

    A manifest is data anyone with write access to the store can edit, so nothing in it may
    choose code to run: a built-in kind is built as recorded, while a `callable` scorer is built
    only when its target is the `scorer_target` the caller passes or is listed in
    ``$CURINDEX_ALLOWED_SCORERS``. The recorded target is only compared with those, as a
    string; nothing is imported before the check passes. The settings are then checked as
    a config load checks them. Raises ScorerError otherwise.
    """
    from curindex.config import SCORER_KINDS

    if not isinstance(recorded, dict) or recorded.get("kind") not in SCORER_KINDS:
        kind = recorded.get("kind") if isinstance(recorded, dict) else recorded
        raise ScorerError(f"version {version}: the manifest names scorer kind {kind!r}, which "
                          f"is not one of {SCORER_KINDS}")
    known = {f.name for f in dataclasses.fields(ScorerConfig)}
    if set(recorded) - known:
        raise ScorerError(f"version {version}: the manifest's scorer settings hold unknown "
                          f"keys {sorted(set(recorded) - known)}")
    if recorded["kind"] == "callable":
        target = recorded.get("target", "")
        allowed = {t.strip() for t in os.environ.get(ALLOWED_TARGETS_ENV, "").split(",")}
        if scorer_target is not None:
            allowed.add(scorer_target)
        if not target or target not in allowed:
            raise ScorerError(
                f"version {version} was built with the callable scorer {target!r}; a reader "
                f"imports a callable only when it is allowed: pass scorer_target={target!r} "
                f"(curindex search --scorer-target) or list it in ${ALLOWED_TARGETS_ENV}")
    try:  # the same checks as a config load: a recorded toy vocab of 2e9 is refused here
        return scorer_from_dict(recorded, source=f"version {version}: manifest")
    except ConfigError as e:
        raise ScorerError(str(e)) from e
