"""The storefront's lane of M3's concurrency cap: its size from the settings, what order entry
keeps, and what the worker processes share on PostgreSQL."""

from __future__ import annotations

import pytest

from m3bng.config import Settings
from m3bng.connectors import Connectors
from m3bng.connectors.m3.client import M3Client, M3ClientConfig
from m3bng.runtime import shared_limits
from tests.support.webhooks import TEST_SECRET


def settings(**values: object) -> Settings:
    return Settings(webhook_secrets=[TEST_SECRET], **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cap", "share", "slots"),
    [(8, 0.25, 2), (4, 0.25, 1), (2, 0.25, 1), (1, 0.25, 0), (8, 0, 0), (8, 0.9, 7)],
)
def test_the_lane_is_the_share_of_the_cap_at_least_one_and_leaves_one(
    cap: int, share: float, slots: int
) -> None:
    assert settings(m3_max_concurrency=cap, storefront_m3_share=share).storefront_m3_slots == slots


def test_unset_the_lane_is_kept_only_where_a_storefront_can_be_served() -> None:
    from m3bng.ops.tokens import hash_token

    entry = f"shop storefront:read {hash_token('x' * 40)}"
    ops_only = f"ops ops:admin {hash_token('y' * 40)}"
    assert settings(m3_max_concurrency=8).storefront_m3_slots == 0
    assert settings(m3_max_concurrency=8, ops_tokens=[ops_only]).storefront_m3_slots == 0
    assert settings(m3_max_concurrency=8, ops_tokens=[ops_only, entry]).storefront_m3_slots == 2
    assert (
        settings(m3_max_concurrency=8, ops_jwt_jwks_url="https://idp.example/jwks").storefront_m3_slots == 2
    )
    assert settings(m3_max_concurrency=8, ops_tokens=[entry], storefront_m3_share=0).storefront_m3_slots == 0


async def test_split_lane_keeps_the_rest_for_order_entry_and_the_shared_cap_counts_it_out() -> None:
    s = settings(m3_max_concurrency=8, storefront_m3_share=0.25)
    m3 = M3Client(M3ClientConfig(base_url="http://127.0.0.1:9", max_concurrency=8))
    lane = m3.split_lane(s.storefront_m3_slots)
    assert (m3.gate.size, lane.gate.size) == (6, 2)
    assert lane.breaker is m3.breaker and lane.gate is not m3.gate
    [limit] = shared_limits(s, Connectors(m3=m3, m3_storefront=lane))
    assert (limit.name, limit.total) == ("m3.concurrency", 6)
    with pytest.raises(ValueError, match=r"1\.\.5 of 6"):
        m3.split_lane(6)
    await m3.aclose()
