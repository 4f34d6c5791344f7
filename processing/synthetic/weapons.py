"""Weapons and equipment of the generated match, in the client's vocabulary.

Every name here is one of processing/vocabulary.py's client names ("AK-47", "M4A1", "Knife",
"C4", "HE Grenade"), the same names a processed demo's frames carry in ``actv_itm``, ``items``,
a kill's ``weapon`` and a grenade's ``type``; ``kill_name`` is the raw CS2 class name the game's
kill event would give, mapped through ``client_name`` where a kill is made.
"""

from __future__ import annotations

from typing import NamedTuple


class Gun(NamedTuple):
    kill_name: str
    cost: int
    speed: float  # max running speed with it out, units/s
    interval: float  # seconds between shots
    damage: int  # typical body-shot damage
    reload: float  # seconds
    reward: int  # kill reward


GUNS: dict[str, Gun] = {
    "Glock-18": Gun("glock", 200, 240.0, 0.15, 30, 2.2, 300),
    "USP-S": Gun("usp_silencer", 200, 240.0, 0.17, 35, 2.2, 300),
    "P2000": Gun("hkp2000", 200, 240.0, 0.17, 35, 2.2, 300),
    "P250": Gun("p250", 300, 240.0, 0.15, 38, 2.2, 300),
    "Desert Eagle": Gun("deagle", 700, 230.0, 0.225, 63, 2.2, 300),
    "AK-47": Gun("ak47", 2700, 215.0, 0.1, 36, 2.5, 300),
    "Galil AR": Gun("galilar", 1800, 215.0, 0.09, 30, 3.0, 300),
    "MAC-10": Gun("mac10", 1050, 240.0, 0.075, 29, 2.6, 600),
    "M4A1": Gun("m4a1_silencer", 2900, 225.0, 0.1, 38, 3.1, 300),
    "M4A4": Gun("m4a1", 3000, 225.0, 0.09, 33, 3.1, 300),
    "FAMAS": Gun("famas", 2050, 220.0, 0.09, 30, 3.3, 300),
    "MP9": Gun("mp9", 1250, 240.0, 0.07, 26, 2.1, 600),
    "AWP": Gun("awp", 4750, 200.0, 1.46, 115, 3.7, 100),
}

KNIFE = {"T": "Knife", "CT": "Knife"}
KNIFE_SPEED = 250.0
C4 = "C4"

# Grenade name (also its frame type) -> (frame type, cost).
NADES: dict[str, tuple[str, int]] = {
    "Smoke Grenade": ("Smoke Grenade", 300),
    "Flashbang": ("Flashbang", 200),
    "HE Grenade": ("HE Grenade", 300),
    "Molotov": ("Molotov", 400),
    "Incendiary Grenade": ("Incendiary Grenade", 500),
    "Decoy Grenade": ("Decoy Grenade", 50),
}
FIRE_TYPES = ("Molotov", "Incendiary Grenade")

PISTOL = {"T": ("Glock-18",), "CT": ("USP-S", "P2000")}
FULL_BUY = {"T": "AK-47", "CT": ("M4A1", "M4A4")}
FORCE_BUY = {"T": ("Galil AR", "MAC-10"), "CT": ("FAMAS", "MP9")}
PISTOL_UPGRADE = ("P250", "Desert Eagle")

ARMOR_COST, HELMET_COST, KIT_COST = 650, 350, 400
