"""A CS2 demo (.dem) turned into frames with demoparser2: one frame per tick demoparser2 reports.

demoparser2 answers column queries (props per player per tick, events, grenade entities); this
package makes three such passes (parse) and assembles frames from numpy columns, never row by
row in pandas: player rows and the alive-player table (players), round and team state
(rounds), events (events, bomb), grenades in flight (nades), then frame dicts (assemble).
Where demoparser2 cannot give a field exactly, the closest honest value is used; every such
choice is listed in docs/frame-fields.md.

Events are placed on the frame of the tick they happened on; an event on a tick that has no
frame (demoparser2 skips ticks without entity data) goes on the next frame, and events after
the last frame are dropped.
"""

from processing.demo.assemble import read_demo
from processing.demo.parse import DemoError, parse_demo

__all__ = ["DemoError", "parse_demo", "read_demo"]
