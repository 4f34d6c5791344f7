"""CS2 Game State Integration (GSI): captures, payload checks, game state -> frames, game cfg.

Socket-free pieces: the server feeds each posted payload to a Framer (injected clock) and
streams the frames it returns; the gsi-config and gsi-replay commands live here too.
"""
