"""The Redis Streams broker (``--broker redis://host:port/db``): every replica reads the same
frames, under the same seq and epoch, from one Redis.

Per stream four keys, all with the stream's name as hash tag so they live in one slot:
``<prefix>:{<stream>}:frames`` (a Redis stream: one entry per frame, id ``<seq+1>-0``, capped
with ``MAXLEN ~ window``), ``:info`` (hash: epoch, meta as JSON), ``:state`` (hash: the flags of
``mark``, JSON values) and ``:control`` (a short Redis stream that gets an entry whenever the
epoch or the state changes, so blocked readers wake at once). ``<prefix>:streams`` lists the
streams in play: an ended stream leaves it, and its keys expire ``ended_keep_s`` later.

Writes are Lua scripts that check the epoch first (an old incarnation can never write into a
new one). Reads take a consistent snapshot with a script, then block with ``XREAD BLOCK`` on the
frames and the control stream. Trouble: an operation that cannot reach Redis, or whose writes
Redis refuses (``maxmemory`` reached), marks the broker unhealthy and starts one recovery task
(exponential backoff with jitter) that retries until Redis answers and has taken everything
this process keeps for it. Meanwhile the streams this process starts, their frames (at most
``window`` per stream, the oldest dropped first) and their marks wait here; the writing side
never sees an error for it. If Redis came back without its data (a restart without
persistence), this process restores the streams it publishes under the same epoch, so readers
see the frames Redis lost as ``lost``, not a reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .base import (
    DEFAULT_WINDOW,
    ENDED_KEEP_S,
    MAX_READ_FRAMES,
    BrokerError,
    BrokerUnavailable,
    EpochMismatch,
    ReadResult,
    StreamInfo,
    UnknownStream,
    check_frames,
    ends,
    json_copy,
    lost_before,
    redact_url,
)
from .memory import new_epoch

log = logging.getLogger(__name__)

MAX_BLOCK_S = 2.0  # longest single XREAD BLOCK: a read asking for more returns after this
PUBLISH_BATCH = 512  # frames per publish script call when a backlog is sent
OUTAGE = (RedisConnectionError, RedisTimeoutError, OSError)

# KEYS: info, state, frames, control, index. ARGV: stream, epoch, meta JSON, restore flag.
# A restore (after Redis lost the stream) keeps the frames key (a snapshot may have kept some)
# and writes nothing when the info is still there. Control streams keep ~64 entries (readers
# only need the newest id); keys left expiring by an ended incarnation are kept again.
START = """
if ARGV[4] == '1' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
else
  redis.call('DEL', KEYS[3])
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'epoch', ARGV[2], 'meta', ARGV[3])
redis.call('PERSIST', KEYS[3])
redis.call('PERSIST', KEYS[4])
redis.call('SADD', KEYS[5], ARGV[1])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', 64, '*', 'epoch', ARGV[2])
return 1
"""

# KEYS: info, frames. ARGV: epoch, maxlen, then seq+1/data pairs. -1: no such stream, -2:
# another epoch. A frame at or below the stream's top is one this process already sent (a call
# retried after its answer was lost) and is skipped; any other error (OOM under maxmemory) is
# raised, so no frame is ever dropped silently.
PUBLISH = """
local current = redis.call('HGET', KEYS[1], 'epoch')
if not current then return -1 end
if current ~= ARGV[1] then return -2 end
local top = 0
local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if newest[1] then top = tonumber(string.match(newest[1][1], '^(%d+)')) end
local added = 0
for i = 3, #ARGV, 2 do
  if tonumber(ARGV[i]) > top then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], ARGV[i] .. '-0', 'd', ARGV[i + 1])
    added = added + 1
  end
end
return added
"""

# KEYS: info, state, control, frames, index. ARGV: epoch, stream, keep ms ('0': the stream goes
# on; else it ended: out of the index, every key expiring), then field/value pairs.
MARK = """
local current = redis.call('HGET', KEYS[1], 'epoch')
if not current then return -1 end
if current ~= ARGV[1] then return -2 end
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', 64, '*', 'mark', '1')
if ARGV[3] ~= '0' then
  redis.call('SREM', KEYS[5], ARGV[2])
  for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
end
return 1
"""

# KEYS: info, state, frames, control. ARGV: asked epoch ('' = current), after id, count.
# Returns {epoch or false, state fields, newest control id, entries, meta JSON or false}; the
# meta only when the reader did not ask for the current epoch.
SNAPSHOT = """
local current = redis.call('HGET', KEYS[1], 'epoch')
local newest = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)
local control = '0-0'
if newest[1] then control = newest[1][1] end
if not current then return {false, {}, control, {}, false} end
local start = '(' .. ARGV[2]
local meta = false
if ARGV[1] ~= current then
  meta = redis.call('HGET', KEYS[1], 'meta')
  if ARGV[1] ~= '' then start = '-' end
end
local entries = redis.call('XRANGE', KEYS[3], start, '+', 'COUNT', ARGV[3])
return {current, redis.call('HGETALL', KEYS[2]), control, entries, meta}
"""


def entry_id(seq: int) -> str:
    """The Redis stream id of a frame: ``<seq+1>-0`` (0-0 is not a valid id to add)."""
    return f"{seq + 1}-0"


def seq_of(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0]) - 1


@dataclass
class _Owned:
    """A stream this process publishes: what it needs to (re)start it in Redis and what waits
    to go out."""

    epoch: str
    meta_json: str
    pending: deque[tuple[int, bytes]]  # at most ``window`` frames
    state: dict[str, str] = field(default_factory=dict)  # field -> JSON value
    started: bool = False  # the start reached Redis (not yet: started during an outage)
    state_written: bool = True  # False: a mark waits to be written
    last_seq: int | None = None
    dropped: int = 0  # frames pushed out of ``pending`` since the last recovery
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def waiting(self) -> bool:
        """Something of this stream is not in Redis yet."""
        return not self.started or bool(self.pending) or not self.state_written


@dataclass(frozen=True)
class _Seen:
    """A stream as the last snapshot found it: while no control entry follows ``control``,
    its epoch and state are still current."""

    epoch: str | None
    control: bytes
    state: dict[str, Any]


class RedisBroker:
    """Frames of live streams in Redis Streams, shared by every process using the same Redis."""

    def __init__(
        self,
        url: str,
        window: int = DEFAULT_WINDOW,
        prefix: str = "eeict",
        op_timeout_s: float = 2.0,
        retry_min_s: float = 0.05,
        retry_max_s: float = 2.0,
        ended_keep_s: float = ENDED_KEEP_S,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1 frame, got {window}")
        self.window, self.prefix = window, prefix
        self.shown_url = redact_url(url)  # what logs and errors say: never the password
        self.retry_min_s, self.retry_max_s = retry_min_s, retry_max_s
        self.op_timeout_s = op_timeout_s
        self.ended_keep_ms = max(1, round(ended_keep_s * 1000))
        # One retry on a fresh connection (a pooled one may be dead after a Redis restart);
        # anything longer is the recovery task's job, so an outage is seen at once.
        retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
        common = {"socket_connect_timeout": op_timeout_s, "retry": retry}
        self._cmd = aioredis.Redis.from_url(url, socket_timeout=op_timeout_s, **common)
        self._blocking = aioredis.Redis.from_url(
            url, socket_timeout=MAX_BLOCK_S + op_timeout_s, **common
        )
        self._scripts = {
            name: self._cmd.register_script(source)
            for name, source in (
                ("start", START),
                ("publish", PUBLISH),
                ("mark", MARK),
                ("snapshot", SNAPSHOT),
            )
        }
        self._owned: dict[str, _Owned] = {}
        self._seen: dict[str, _Seen] = {}
        self.dropped_frames = 0  # published frames that never reached Redis (an outage too long)
        self._healthy = True
        self._recovered = asyncio.Event()
        self._recovered.set()
        self._recovery: asyncio.Task[None] | None = None

    # -- health ------------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._healthy

    async def ping(self) -> bool:
        try:
            await self._cmd.ping()
        except (*OUTAGE, RedisError) as exc:  # e.g. something else answers on that port
            self._down(exc)
            return False
        return self._healthy

    def _down(self, exc: BaseException) -> None:
        """Note that Redis is unreachable or refuses what this process writes, and make sure
        one recovery task is running."""
        if self._healthy:
            log.warning("redis at %s %s: retrying with backoff", self.shown_url, _trouble(exc))
        self._healthy = False
        self._recovered.clear()
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        """Until Redis answers and has taken everything this process keeps for it: PING, then
        each stream brought up to date. Whatever fails (unreachable, refused, another error)
        is logged when it changes and retried; nothing that waits is dropped meanwhile."""
        delay, last = self.retry_min_s, ""
        while True:
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            try:
                await self._cmd.ping()
                while waiting := [item for item in self._owned.items() if item[1].waiting]:
                    for stream, owned in waiting:  # again for what came meanwhile
                        await self._catch_up(stream, owned)
            except Exception as exc:  # a recovery that stopped would leave the broker down
                trouble = _trouble(exc)
                if trouble != last:
                    unexpected = not isinstance(exc, (*OUTAGE, ResponseError))
                    log.log(logging.ERROR if unexpected else logging.WARNING,
                            "redis at %s %s: still retrying", self.shown_url, trouble,
                            exc_info=exc if unexpected else None)  # fmt: skip
                    last = trouble
                delay = min(delay * 2, self.retry_max_s)
                continue
            self._healthy = True
            self._recovered.set()
            log.warning("redis at %s reachable again", self.shown_url)
            return

    def _require_healthy(self) -> None:
        """Fail at once while the recovery task runs, instead of each call timing out."""
        if not self._healthy:
            raise BrokerUnavailable(f"redis at {self.shown_url} is unreachable")

    async def _catch_up(self, stream: str, owned: _Owned) -> None:
        """After trouble: everything that waited for this stream. A stream another process
        restarted meanwhile is dropped from this one; an incarnation this process replaced
        meanwhile is not written at all."""
        if self._owned.get(stream) is not owned:
            return
        try:
            await self._flush(stream, owned)
        except EpochMismatch as exc:
            log.warning("%s: its waiting frames are dropped", exc)
        if owned.dropped:
            log.warning(
                "%d frames of %r did not fit the window while redis was away: readers get them "
                "as lost",
                owned.dropped,
                stream,
            )
            owned.dropped = 0

    async def _wait_healthy(self, timeout_s: float) -> None:
        if self._healthy:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._recovered.wait(), timeout_s)
        if not self._healthy:
            raise BrokerUnavailable(f"redis at {self.shown_url} is unreachable")

    def _unavailable(self, exc: BaseException) -> BrokerUnavailable:
        self._down(exc)
        return BrokerUnavailable(f"redis at {self.shown_url} {_trouble(exc)}")

    # -- keys --------------------------------------------------------------------------------

    def _keys(self, stream: str) -> dict[str, str]:
        base = f"{self.prefix}:{{{stream}}}"
        return {part: f"{base}:{part}" for part in ("info", "state", "frames", "control")}

    @property
    def _index(self) -> str:
        return f"{self.prefix}:streams"

    # -- writing -----------------------------------------------------------------------------

    async def start_stream(self, stream: str, meta: dict[str, Any]) -> str:
        meta_json = json.dumps(json_copy(meta, "meta"))
        owned = _Owned(new_epoch(), meta_json, pending=deque(maxlen=self.window))
        self._owned[stream] = owned
        await self._write(stream, owned)
        return owned.epoch

    async def publish(self, stream: str, epoch: str, seq: int, data: bytes) -> None:
        await self.publish_many(stream, epoch, [(seq, data)])

    async def publish_many(
        self, stream: str, epoch: str, frames: Sequence[tuple[int, bytes]]
    ) -> None:
        """Send the frames, or keep them until Redis takes them (see the module's docstring)."""
        owned = self._owned_at(stream, epoch)
        checked = check_frames(frames, owned.last_seq)
        if not checked:
            return
        owned.last_seq = checked[-1][0]
        overflow = len(owned.pending) + len(checked) - self.window
        if overflow > 0:  # the deque drops the oldest: readers will see them as lost
            owned.dropped += overflow
            self.dropped_frames += overflow
        owned.pending.extend((seq, bytes(data)) for seq, data in checked)
        await self._write(stream, owned)

    async def mark(self, stream: str, epoch: str, **state: Any) -> None:
        fields = {name: json.dumps(value) for name, value in json_copy(state, "state").items()}
        owned = self._owned.get(stream)
        if owned is not None and owned.epoch == epoch:
            owned.state.update(fields)
            owned.state_written = False
            await self._write(stream, owned)
            return
        # A stream another process publishes (or an incarnation this one no longer holds).
        self._require_healthy()
        try:
            done = await self._write_state(stream, epoch, fields)
        except OUTAGE as exc:
            raise self._unavailable(exc) from exc
        except ResponseError as exc:
            raise BrokerError(f"redis refused the mark of {stream!r}: {exc}") from exc
        self._raise_for(done, stream, epoch)

    async def _write(self, stream: str, owned: _Owned) -> None:
        """Bring Redis up to date with ``stream`` now if it is healthy; otherwise, or if that
        fails for want of Redis, the recovery task will."""
        if not self._healthy:
            return
        try:
            await self._flush(stream, owned)
        except (*OUTAGE, ResponseError) as exc:
            self._down(exc)

    async def _flush(self, stream: str, owned: _Owned) -> None:
        """In order: the stream started (or restored, if Redis lost it), the frames that wait,
        then its state, so an ``ended`` never overtakes the last frames. An ended stream that
        has nothing left to write is no longer this process's to keep."""
        keys = self._keys(stream)
        async with owned.lock:
            if not owned.started:
                await self._run_start(stream, owned, restore=False)
                owned.started = True
            while owned.pending:
                batch = [owned.pending[i] for i in range(min(PUBLISH_BATCH, len(owned.pending)))]
                args: list[Any] = [owned.epoch, self.window]
                for seq, data in batch:
                    args += [seq + 1, data]  # the entry id's first part (entry_id)
                added = await self._scripts["publish"](
                    keys=[keys["info"], keys["frames"]], args=args
                )
                if added == -1:
                    await self._restore(stream, owned)
                    continue
                if added == -2:
                    self._fence(stream, owned)
                last = batch[-1][0]
                while owned.pending and owned.pending[0][0] <= last:
                    owned.pending.popleft()
            if not owned.state_written:
                done = await self._write_state(stream, owned.epoch, owned.state)
                if done == -1:
                    await self._restore(stream, owned)
                    done = await self._write_state(stream, owned.epoch, owned.state)
                if done == -2:
                    self._fence(stream, owned)
                owned.state_written = True
            if _ending(owned.state) and self._owned.get(stream) is owned:
                del self._owned[stream]

    def _fence(self, stream: str, owned: _Owned) -> None:
        """Another process started a newer incarnation: this one writes nothing more."""
        owned.pending.clear()
        if self._owned.get(stream) is owned:
            del self._owned[stream]
        raise EpochMismatch(f"stream {stream!r} was restarted by another process")

    async def _run_start(self, stream: str, owned: _Owned, restore: bool) -> int:
        keys = self._keys(stream)
        return await self._scripts["start"](
            keys=[keys["info"], keys["state"], keys["frames"], keys["control"], self._index],
            args=[stream, owned.epoch, owned.meta_json, "1" if restore else "0"],
        )

    async def _restore(self, stream: str, owned: _Owned) -> None:
        """Put back the info of a stream this process publishes, when Redis lost it; its state
        follows (``_flush`` writes it after the frames)."""
        if await self._run_start(stream, owned, restore=True):
            owned.state_written = not owned.state
            log.warning("redis had lost stream %r: restored at epoch %s", stream, owned.epoch)

    async def _write_state(self, stream: str, epoch: str, fields: dict[str, str]) -> int:
        """Run the mark script (1: written, -1: no such stream, -2: another epoch); an ending
        state takes the stream out of the index and sets its keys to expire."""
        keys = self._keys(stream)
        keep_ms = self.ended_keep_ms if _ending(fields) else 0
        args = [epoch, stream, keep_ms, *(item for pair in fields.items() for item in pair)]
        return await self._scripts["mark"](
            keys=[keys["info"], keys["state"], keys["control"], keys["frames"], self._index],
            args=args,
        )

    def _owned_at(self, stream: str, epoch: str) -> _Owned:
        owned = self._owned.get(stream)
        if owned is None:
            raise UnknownStream(f"stream {stream!r} is not in play in this process")
        if owned.epoch != epoch:
            raise EpochMismatch(f"stream {stream!r} is at epoch {owned.epoch}, not {epoch}")
        return owned

    @staticmethod
    def _raise_for(code: int, stream: str, epoch: str) -> None:
        if code == -1:
            raise UnknownStream(f"stream {stream!r} is not in redis")
        if code == -2:
            raise EpochMismatch(f"stream {stream!r} is no longer at epoch {epoch}")

    # -- reading -----------------------------------------------------------------------------

    async def read(
        self, stream: str, after_seq: int, epoch: str | None, block_s: float = 0.0
    ) -> ReadResult:
        """One round trip while a stream flows: ``XREAD BLOCK`` on the frames and the control
        stream, trusting the epoch of the last snapshot as long as no control entry came; a
        snapshot (a script: epoch, state and frames at one instant) otherwise."""
        await self._wait_healthy(block_s)
        keys = self._keys(stream)
        try:
            seen = self._seen.get(stream)
            if block_s <= 0 or epoch is None or seen is None or seen.epoch != epoch:
                result, seen = await self._snapshot(stream, keys, after_seq, epoch)
                if result.frames or result.reset or block_s <= 0:
                    return result
            block_ms = max(1, round(min(block_s, MAX_BLOCK_S) * 1000))
            reply = await self._blocking.xread(
                {keys["frames"]: entry_id(after_seq), keys["control"]: seen.control},
                count=MAX_READ_FRAMES,
                block=block_ms,
            )
            frames_key = keys["frames"].encode()
            if reply and all(key == frames_key for key, _ in reply) and seen.epoch is not None:
                frames = [(seq_of(entry_id_), fields[b"d"]) for entry_id_, fields in reply[0][1]]
                lost = lost_before(frames[0][0], after_seq + 1)
                return ReadResult(seen.epoch, frames, False, lost, dict(seen.state))
            result, _ = await self._snapshot(stream, keys, after_seq, epoch)
        except (*OUTAGE, ResponseError) as exc:
            raise self._unavailable(exc) from exc
        return result

    async def _snapshot(
        self, stream: str, keys: dict[str, str], after_seq: int, epoch: str | None
    ) -> tuple[ReadResult, _Seen]:
        current, state_fields, control, entries, meta = await self._scripts["snapshot"](
            keys=[keys["info"], keys["state"], keys["frames"], keys["control"]],
            args=[epoch or "", entry_id(after_seq), MAX_READ_FRAMES],
        )
        if current is None:
            seen = _Seen(None, control, {})
            self._seen.pop(stream, None)
            return ReadResult(epoch=None, frames=[]), seen
        seen = _Seen(current.decode(), control, _decode_state(state_fields))
        self._seen[stream] = seen
        reset = epoch is not None and epoch != seen.epoch
        frames = [(seq_of(entry[0]), _data(entry[1])) for entry in entries]
        lost = lost_before(frames[0][0] if frames else None, 0 if reset else after_seq + 1)
        told = json.loads(meta) if meta is not None else None
        return ReadResult(seen.epoch, frames, reset, lost, dict(seen.state), told), seen

    async def streams(self) -> dict[str, StreamInfo]:
        self._require_healthy()
        try:
            names = sorted(name.decode() for name in await self._cmd.smembers(self._index))
            async with self._cmd.pipeline(transaction=False) as pipe:
                for name in names:
                    keys = self._keys(name)
                    pipe.hgetall(keys["info"])
                    pipe.hgetall(keys["state"])
                replies = await pipe.execute()
        except (*OUTAGE, ResponseError) as exc:
            raise self._unavailable(exc) from exc
        found = {}
        for name, info, state in zip(names, replies[::2], replies[1::2], strict=True):
            if b"epoch" in info:
                meta = json.loads(info[b"meta"])
                found[name] = StreamInfo(info[b"epoch"].decode(), meta, _decode_state(state))
        return found

    async def close(self) -> None:
        if self._recovery is not None:
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovery
        await self._blocking.aclose()
        await self._cmd.aclose()


def _data(fields: list[bytes]) -> bytes:
    """The frame bytes of an entry's field list (``d`` and its value)."""
    return fields[1]


def _decode_state(flat: list[bytes] | dict[bytes, bytes]) -> dict[str, Any]:
    pairs = flat.items() if isinstance(flat, dict) else zip(flat[::2], flat[1::2], strict=True)
    return {name.decode(): json.loads(value) for name, value in pairs}


def _ending(fields: dict[str, str]) -> bool:
    """Whether state fields as they are written to Redis (JSON values) end the stream."""
    return ends({name: json.loads(value) for name, value in fields.items()})


def _trouble(exc: BaseException) -> str:
    """What went wrong, for one log line (redis-py's messages name the host, never the
    password)."""
    if isinstance(exc, ResponseError):
        return f"answers with an error ({exc})"
    if isinstance(exc, OUTAGE):
        return f"is unreachable ({exc or type(exc).__name__})"
    return f"failed ({exc!r})"
