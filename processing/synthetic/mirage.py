"""de_mirage as the generated match needs it: spawn points, a small walkable route graph, spots.

Coordinates are CS2 world units. Spawns are the map's spawn points; graph nodes were placed on
paths real players walk (checked against the positions in ../shared/demos), so generated
players stay in corridors of the real radar image (origin pos_x=-3230, pos_y=1713, scale 5.0).
"""

from __future__ import annotations

import heapq
import itertools
import math
from functools import cache

Point = tuple[float, float, float]

RADAR_POS_X = -3230.0
RADAR_POS_Y = 1713.0
RADAR_SCALE = 5.0
# The world rectangle the 1024 px radar image covers: x in [MIN_X, MAX_X], y in [MIN_Y, MAX_Y].
MIN_X, MAX_Y = RADAR_POS_X, RADAR_POS_Y
MAX_X, MIN_Y = RADAR_POS_X + 1024 * RADAR_SCALE, RADAR_POS_Y - 1024 * RADAR_SCALE

T_SPAWNS: tuple[Point, ...] = (
    (1216.0, -115.0, -161.0),
    (1216.0, -211.0, -159.0),
    (1136.0, 32.0, -159.0),
    (1136.0, -64.0, -159.0),
    (1136.0, -256.0, -159.0),
)
CT_SPAWNS: tuple[Point, ...] = (
    (-1776.0, -1976.0, -260.0),
    (-1656.0, -1976.0, -262.0),
    (-1720.0, -1896.0, -262.0),
    (-1656.0, -1800.0, -262.0),
    (-1776.0, -1800.0, -260.0),
)

NODES: dict[str, Point] = {
    "t_spawn": (1200.0, -250.0, -165.0),
    "t_spawn_s": (1300.0, -450.0, -168.0),
    # T spawn -> palace alley -> T ramp -> A
    "t_alley_1": (1185.0, -720.0, -220.0),
    "t_alley_2": (1150.0, -990.0, -262.0),
    "palace_alley_1": (820.0, -1120.0, -262.0),
    "palace_alley_2": (670.0, -1350.0, -264.0),
    "t_ramp_bottom": (560.0, -1590.0, -264.0),
    "t_ramp_top": (250.0, -1545.0, -176.0),
    "a_ramp_exit": (0.0, -1700.0, -168.0),
    # T spawn -> palace -> A
    "palace_1": (1365.0, -830.0, -168.0),
    "palace_2": (1355.0, -1160.0, -168.0),
    "palace_3": (1265.0, -1430.0, -168.0),
    "palace_4": (990.0, -1500.0, -168.0),
    "palace_5": (950.0, -1820.0, -72.0),
    "palace_6": (930.0, -2130.0, -40.0),
    "palace_7": (690.0, -2300.0, -40.0),
    "palace_8": (360.0, -2300.0, -40.0),
    "palace_9": (80.0, -2260.0, -40.0),
    "palace_exit": (-140.0, -2160.0, -10.0),
    # A site
    "a_tetris": (-250.0, -1900.0, -168.0),
    "a_site": (-430.0, -1950.0, -178.0),
    "a_default": (-466.0, -2190.0, -178.0),
    "a_ticket": (-720.0, -1900.0, -180.0),
    "a_ct_side": (-700.0, -2300.0, -176.0),
    "a_site_n": (-520.0, -1680.0, -173.0),
    "a_jungle": (-660.0, -1380.0, -168.0),
    # mid
    "t_mid": (700.0, -430.0, -170.0),
    "top_mid": (94.0, -465.0, -176.0),
    "mid_1": (-110.0, -648.0, -220.0),
    "mid_2": (-330.0, -680.0, -264.0),
    "mid_window_low": (-630.0, -700.0, -269.0),
    "connector": (-684.0, -1050.0, -212.0),
    # catwalk / short -> B
    "catwalk_1": (-47.0, -400.0, -166.0),
    "catwalk_2": (-400.0, -405.0, -167.0),
    "catwalk_3": (-740.0, -360.0, -165.0),
    "b_short_1": (-815.0, -80.0, -168.0),
    "b_short_2": (-850.0, 245.0, -170.0),
    "b_short_3": (-1165.0, 260.0, -168.0),
    "b_site_e": (-1500.0, 240.0, -167.0),
    "b_site": (-1840.0, 290.0, -163.0),
    "b_site_w": (-2100.0, 200.0, -160.0),
    "b_site_s": (-2060.0, -20.0, -166.0),
    "b_arch": (-1920.0, -300.0, -162.0),
    # CT spawn routes
    "ct_spawn": (-1690.0, -1860.0, -268.0),
    "ct_a_1": (-1560.0, -2150.0, -252.0),
    "ct_a_2": (-1300.0, -2370.0, -205.0),
    "ct_a_3": (-990.0, -2390.0, -168.0),
    "ct_b_1": (-1640.0, -1490.0, -264.0),
    "ct_b_2": (-1620.0, -1145.0, -241.0),
    "ct_b_3": (-1595.0, -808.0, -168.0),
    "shop": (-1830.0, -600.0, -168.0),
}

_CHAINS: tuple[tuple[str, ...], ...] = (
    ("t_spawn", "t_spawn_s", "t_alley_1", "t_alley_2", "palace_alley_1", "palace_alley_2"),
    ("palace_alley_2", "t_ramp_bottom", "t_ramp_top", "a_ramp_exit", "a_tetris", "a_site"),
    ("t_spawn_s", "palace_1", "palace_2", "palace_3", "palace_4", "palace_5", "palace_6"),
    ("palace_6", "palace_7", "palace_8", "palace_9", "palace_exit", "a_default"),
    ("a_site", "a_default", "a_ct_side", "a_ticket", "a_site", "a_site_n", "a_jungle"),
    ("a_jungle", "connector", "mid_window_low", "mid_2", "mid_1", "top_mid", "t_mid", "t_spawn"),
    ("top_mid", "catwalk_1", "catwalk_2", "catwalk_3", "b_short_1", "b_short_2", "b_short_3"),
    ("b_short_3", "b_site_e", "b_site", "b_site_w", "b_site_s", "b_arch", "shop", "ct_b_3"),
    ("ct_b_3", "ct_b_2", "ct_b_1", "ct_spawn", "ct_a_1", "ct_a_2", "ct_a_3", "a_ct_side"),
)

# Where a team stands while holding, per site, and which node each spot faces.
SITE_SPOTS: dict[str, tuple[str, ...]] = {
    "A": ("a_default", "a_site", "a_tetris", "a_ticket", "a_ct_side"),
    "B": ("b_site", "b_site_w", "b_site_e", "b_site_s"),
}
PLANT_SPOTS: dict[str, tuple[str, ...]] = {
    "A": ("a_default", "a_site"),
    "B": ("b_site", "b_site_w"),
}
# CT hold spots: (spot, faces), by area.
CT_HOLDS: dict[str, tuple[tuple[str, str], ...]] = {
    "A": (("a_default", "palace_exit"), ("a_ticket", "a_ramp_exit"), ("a_jungle", "mid_2")),
    "mid": (("connector", "mid_1"),),
    "B": (("b_site", "b_short_3"), ("b_site_w", "b_short_2"), ("b_arch", "b_short_3")),
}
# T routes: (staging node where the T waits for the call, entry node on the site), by site.
T_ROUTES: dict[str, tuple[tuple[str, str], ...]] = {
    "A": (("t_ramp_bottom", "a_tetris"), ("palace_6", "a_default"), ("top_mid", "a_jungle")),
    "B": (("catwalk_2", "b_site_e"), ("top_mid", "b_site_e")),
}
# Where a grenade lands when thrown at a site (smokes/flashes/molotovs of an execute).
UTILITY_TARGETS: dict[str, tuple[str, ...]] = {
    "A": ("a_ct_side", "a_jungle", "a_ticket", "a_default", "a_site"),
    "B": ("b_arch", "b_site_s", "b_site", "b_short_3"),
}


def _edges() -> dict[str, list[tuple[str, float]]]:
    graph: dict[str, list[tuple[str, float]]] = {name: [] for name in NODES}
    for chain in _CHAINS:
        for a, b in itertools.pairwise(chain):
            d = math.dist(NODES[a], NODES[b])
            graph[a].append((b, d))
            graph[b].append((a, d))
    return graph


_GRAPH = _edges()


@cache
def route(start: str, goal: str) -> tuple[tuple[str, ...], float]:
    """Shortest node path from start to goal (both included) and its length in world units."""
    best = {start: 0.0}
    prev: dict[str, str] = {}
    queue = [(0.0, start)]
    while queue:
        dist, node = heapq.heappop(queue)
        if node == goal:
            break
        if dist > best[node]:
            continue
        for nxt, d in _GRAPH[node]:
            if dist + d < best.get(nxt, math.inf):
                best[nxt] = dist + d
                prev[nxt] = node
                heapq.heappush(queue, (dist + d, nxt))
    path = [goal]
    while path[-1] != start:
        path.append(prev[path[-1]])
    return tuple(reversed(path)), best[goal]


def nearest_node(point: Point) -> str:
    return min(NODES, key=lambda n: math.dist(NODES[n][:2], point[:2]))
