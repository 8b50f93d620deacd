"""The one frozen pydantic base of the project (useq-schema's ``_base_model`` shape).

Every model that crosses a boundary, configuration, actions, bundle manifests, network and
simulator settings, derives from :class:`FrozenModel`: immutable once validated, an unknown
key is an error, NaN and infinity are refused. A model that must read NaN (a metric that
could not be measured) or keep unknown keys says so in its own ``model_config``, which
pydantic merges with this one. Imports nothing from the project (the bottom layer).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["FrozenModel"]


class FrozenModel(BaseModel):
    """Immutable once validated; a typo in a key is an error, not a silent default; NaN and
    infinity are refused everywhere (a limit of ``.inf`` is no limit)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
