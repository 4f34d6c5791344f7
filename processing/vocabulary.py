"""The client's names for weapons, items and grenades: one table for every source.

The Unity client and the radar key their models on demoinfocs' equipment names (``AK-47``,
``Knife``, ``HE Grenade``, ``C4``; listed in the reference parser's README). Demos (demoparser2),
GSI posts (``weapon_ak47``) and kill events (``ak47``, ``hegrenade``) each name things their own
way; every source maps its raw names through ``client_name`` so frames speak one vocabulary.
"""

from __future__ import annotations

import re

# CS2 item class name (without the ``weapon_`` prefix) -> the client's name.
ITEMS: dict[str, str] = {
    "ak47": "AK-47",
    "aug": "AUG",
    "awp": "AWP",
    "c4": "C4",
    "cz75a": "CZ75 Auto",
    "decoy": "Decoy Grenade",
    "deagle": "Desert Eagle",
    "elite": "Dual Berettas",
    "famas": "FAMAS",
    "fiveseven": "Five-SeveN",
    "flashbang": "Flashbang",
    "g3sg1": "G3SG1",
    "galilar": "Galil AR",
    "glock": "Glock-18",
    "hegrenade": "HE Grenade",
    "incgrenade": "Incendiary Grenade",
    "knife": "Knife",
    "m249": "M249",
    "m4a1_silencer": "M4A1",  # demoinfocs calls the M4A1-S "M4A1"
    "m4a1": "M4A4",  # and the M4A4's class is weapon_m4a1
    "mac10": "MAC-10",
    "mag7": "MAG-7",
    "molotov": "Molotov",
    "mp5sd": "MP5-SD",
    "mp7": "MP7",
    "mp9": "MP9",
    "negev": "Negev",
    "nova": "Nova",
    "hkp2000": "P2000",
    "p250": "P250",
    "p90": "P90",
    "bizon": "PP-Bizon",
    "revolver": "R8 Revolver",
    "sawedoff": "Sawed-Off",
    "scar20": "SCAR-20",
    "sg556": "SG 553",
    "smokegrenade": "Smoke Grenade",
    "ssg08": "SSG 08",
    "tec9": "Tec-9",
    "ump45": "UMP-45",
    "usp_silencer": "USP-S",
    "xm1014": "XM1014",
    "taser": "Zeus x27",
}

# Equipment that is not a weapon (in the client's model list).
KEVLAR, KEVLAR_HELMET, DEFUSE_KIT = "Kevlar Vest", "Kevlar + Helmet", "Defuse Kit"

# Other spellings sources use for the same things (lower-cased, prefix stripped).
ALIASES: dict[str, str] = {
    # Display names (demoparser2's active_weapon_name / inventory, the game's HUD).
    **{name.lower(): name for name in ITEMS.values()},
    "high explosive grenade": "HE Grenade",
    "c4 explosive": "C4",
    "m4a1-s": "M4A1",
    "usp-s": "USP-S",
    "zeus x27": "Zeus x27",
    "incendiary": "Incendiary Grenade",
    # Projectile / effect names (GSI grenades, demoparser2 grenade tables, kill weapons).
    "smoke": "Smoke Grenade",
    "smokegrenade_projectile": "Smoke Grenade",
    "he": "HE Grenade",
    "frag": "HE Grenade",
    "hegrenade_projectile": "HE Grenade",
    "flash": "Flashbang",
    "flashbang_projectile": "Flashbang",
    "firebomb": "Molotov",
    "molotov_projectile": "Molotov",
    "inferno": "Molotov",  # a kill by fire: the client has one fire model
    "decoy_projectile": "Decoy Grenade",
    "incgrenade_projectile": "Incendiary Grenade",
    "planted_c4": "C4",
    "kevlar": KEVLAR,
    "vest": KEVLAR,
    "assaultsuit": KEVLAR_HELMET,
    "vesthelm": KEVLAR_HELMET,
    "defuser": DEFUSE_KIT,
}

# Knife skins all become "Knife": knife, knife_t, bayonet, knife_karambit, knife_butterfly, ...
_KNIFE = re.compile(r"^(knife.*|bayonet)$")


def client_name(raw: str) -> str:
    """The client's name for a raw weapon, item or grenade name from any source.

    Unknown names come back unchanged (never dropped), so a new game item shows up as itself
    and a test comparing vocabularies can find it.
    """
    key = raw.strip().lower()
    if key.startswith("weapon_"):
        key = key[len("weapon_") :]
    if key in ITEMS:
        return ITEMS[key]
    if key in ALIASES:
        return ALIASES[key]
    if _KNIFE.match(key):
        return "Knife"
    return raw


CLIENT_NAMES: frozenset[str] = frozenset(ITEMS.values()) | {KEVLAR, KEVLAR_HELMET, DEFUSE_KIT}

# The game has one projectile (and one kill weapon, "inferno") for the molotov and the
# incendiary; each side can buy only its own, so the side names it.
_FIRE_BY_SIDE = {"T": "Molotov", "CT": "Incendiary Grenade"}


def fire_grenade(side: str | None) -> str:
    """The client's name for a fire grenade thrown by ``side`` ("T" or "CT"; Molotov when
    the side is not known: the client has one fire model)."""
    return _FIRE_BY_SIDE.get(side or "", "Molotov")
