"""Deterministic experiment assignment (pure): the same customer always lands in the same arm.

The bucket is a hash of (workspace, experiment, customer), so assignment needs no shared state,
is the same in every worker and survives a lost assignment row; the row we store on top makes it
sticky even if the founder later changes the split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HOLDOUT = "holdout"
BUCKETS = 10_000


def bucket(*, workspace_id: int, experiment_id: int, customer_id: int, salt: str = "") -> int:
    """A uniform bucket in [0, BUCKETS) for this customer in this experiment."""
    digest = hashlib.sha256(f"{workspace_id}:{experiment_id}:{customer_id}:{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def assign(
    *,
    workspace_id: int,
    experiment_id: int,
    customer_id: int,
    holdout_percent: float,
    variants: Sequence[tuple[str, int]],
) -> str:
    """The arm of a customer: HOLDOUT, or a variant key chosen in proportion to its weight."""
    if bucket(workspace_id=workspace_id, experiment_id=experiment_id, customer_id=customer_id, salt="holdout") < round(
        holdout_percent * BUCKETS / 100
    ):
        return HOLDOUT
    total = sum(weight for _key, weight in variants)
    if total <= 0:
        raise ValueError("an experiment needs at least one variant with a positive weight")
    # A second, independent hash splits the non-holdout customers, so the holdout is uniform too.
    point = bucket(workspace_id=workspace_id, experiment_id=experiment_id, customer_id=customer_id, salt="variant")
    point = point * total // BUCKETS
    for key, weight in variants:
        if point < weight:
            return key
        point -= weight
    return variants[-1][0]
