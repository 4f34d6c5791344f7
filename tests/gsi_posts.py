"""A small live match for in-process servers: synthetic CS2 GSI posts, and /metrics as parsed.

For tests that need a match in play but not the shared capture: two players walking along x,
posted as the game posts them (one JSON payload per POST, with the cfg's auth token).
"""

from __future__ import annotations

import asyncio
import json
import math

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

SID_A, SID_B = "76561190000000001", "76561190000000002"


def _player(name: str, team: str, x: float) -> dict:
    return {
        "name": name,
        "team": team,
        "state": {"health": 100, "armor": 0, "helmet": False, "money": 800},
        "match_stats": {"kills": 0, "deaths": 0, "assists": 0},
        "weapons": {"weapon_0": {"name": "weapon_knife", "state": "active"}},
        "position": f"{x:.2f}, 0.00, 0.00",
        "forward": f"{math.cos(0.0):.6f}, {math.sin(0.0):.6f}, 0.000000",
    }


def gsi_payload(step: int, token: str) -> dict:
    """The ``step``-th post of a live round on de_mirage."""
    return {
        "provider": {"timestamp": 1_700_000_000 + step},
        "map": {"name": "de_mirage", "phase": "live", "round": 1},
        "round": {"phase": "live"},
        "allplayers": {
            SID_A: _player("alice", "T", step * 10.0),
            SID_B: _player("bob", "CT", -step * 10.0),
        },
        "auth": {"token": token},
    }


async def post_gsi(http_port: int, match: str, payload: dict) -> int:
    """POST one payload to ``/gsi/<match>``; the HTTP status."""
    url = f"http://127.0.0.1:{http_port}/gsi/{match}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=json.dumps(payload), timeout=aiohttp.ClientTimeout(5)) as answer,
    ):
        return answer.status


async def keep_posting(http_port: int, match: str, token: str, interval: float = 0.1) -> None:
    """Post like the game does (every ``interval`` s) until cancelled."""
    step = 0
    while True:
        status = await post_gsi(http_port, match, gsi_payload(step, token))
        assert status == 200, f"post {step} answered {status}"
        step += 1
        await asyncio.sleep(interval)


async def scrape(http_port: int) -> dict:
    """``/metrics`` of a server without a token, parsed by prometheus-client: name -> family."""
    url = f"http://127.0.0.1:{http_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as answer:
        assert answer.status == 200
        text = await answer.text()
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample_count(family, sample_name: str | None = None) -> float:
    """The sum of a family's samples named ``sample_name`` (default: its first sample's name)."""
    samples = [s for s in family.samples if not s.name.endswith("_created")]
    name = sample_name or (samples[0].name if samples else "")
    return sum(s.value for s in samples if s.name == name)
