#!/usr/bin/env node
// Subscribe to an EEICT Stream live stream and print one status line a second; reconnect with
// backoff and resume with resume_seq like subscribe.py. Protocol: docs/protocol.md. Same
// msgpack decoder as the browser radar (@msgpack/msgpack). Asks for compressed bursts
// (?encoding=deflate: raw DEFLATE, inflated with node:zlib) unless --encoding none.
import { parseArgs } from "node:util";
import { inflateRawSync } from "node:zlib";
import { decode, encode } from "@msgpack/msgpack";
import WebSocket from "ws";

const HELP = `usage: node subscribe.mjs [--url ws://127.0.0.1:8080] [--stream generated]
                          [--buffer SECONDS] [--duration SECONDS] [--token TOKEN]
                          [--encoding deflate|none]

Subscribes to /live/<stream>, keeps --buffer seconds of frames, plays them when the server
clock reaches epoch + seq / rate, and prints tick, buffer depth and lag once a second. When
the connection drops it reconnects with backoff and resumes after the last frame received.
Exits 2 when the stream does not exist or the server refuses us (HTTP 401/403/404).

  --url URL          server (default ws://127.0.0.1:8080)
  --stream ID        live stream id, see /streams (default generated)
  --buffer SECONDS   frames to hold ahead (default 1)
  --duration SECONDS stop after this long, 0 = forever (default 0)
  --token TOKEN      bearer token when the server has one
  --encoding NAME    deflate: ask for compressed bursts (default); none: plain frames
  -h, --help         show this help`;
const MAX_BACKOFF_MS = 10_000;

function usageError(message) {
  console.error(`error: ${message}\n\n${HELP}`);
  process.exit(2);
}

let opts;
try {
  ({ values: opts } = parseArgs({
    options: {
      url: { type: "string", default: "ws://127.0.0.1:8080" },
      stream: { type: "string", default: "generated" },
      buffer: { type: "string", default: "1" },
      duration: { type: "string", default: "0" },
      token: { type: "string", default: "" },
      encoding: { type: "string", default: "deflate" },
      help: { type: "boolean", short: "h", default: false },
    },
  }));
} catch (err) {
  usageError(err.message); // an unknown option or a missing value
}
if (opts.help) {
  console.log(HELP);
  process.exit(0);
}
const seconds = (name) => {
  const value = Number(opts[name]);
  if (opts[name].trim() === "" || !(value >= 0)) usageError(`--${name} must be a number >= 0, got "${opts[name]}"`);
  return value;
};
if (!["deflate", "none"].includes(opts.encoding)) usageError(`--encoding must be deflate or none, got "${opts.encoding}"`);
const bufferS = seconds("buffer");
const durationS = seconds("duration");

const query = opts.encoding === "none" ? "" : `?encoding=${opts.encoding}`;
const url = `${opts.url.replace(/\/+$/, "")}/live/${encodeURIComponent(opts.stream)}${query}`;

// The frames of a ticks message: a plain array, or data = raw DEFLATE of one msgpack array.
function tickFrames(msg) {
  if (msg.frames) return msg.frames;
  if (msg.encoding !== "deflate") throw new Error(`ticks in an unknown encoding: ${msg.encoding}`);
  const frames = decode(inflateRawSync(msg.data));
  if (frames.length !== msg.count) throw new Error(`ticks say ${msg.count} frames but hold ${frames.length}`);
  return frames;
}
const headers = opts.token ? { Authorization: `Bearer ${opts.token}` } : {};
const buffer = []; // [seq, frame], oldest first
let rate = 64;
let epoch = null;
let offset = 0; // server clock minus ours
let lastSeq = null; // last seq received: where a reconnect resumes
let played = null; // [seq, tick] on screen
let received = 0;
let skips = 0;
let reconnects = 0;
let backoffMs = 500;
let ws = null;
let retryTimer = null;
let stopping = false;

const now = () => Date.now() / 1000;
const playhead = () => (now() + offset - epoch) * rate;

function onHello(msg) {
  if (lastSeq !== null && msg.stream.epoch !== epoch) {
    lastSeq = null; // a new timeline (the server restarted): old seqs mean nothing
    buffer.length = 0;
  }
  rate = msg.stream.rate;
  epoch = msg.stream.epoch;
  offset = msg.server_time - now();
  const request = { type: "subscribe", buffer: Math.min(msg.max_buffer, Math.round(bufferS * rate)) };
  if (lastSeq !== null) request.resume_seq = lastSeq + 1;
  ws.send(encode(request));
}

function open() {
  let streaming = false; // frames arrived: the connection works, reset the backoff
  let exitCode = null; // set when reconnecting would not help
  ws = new WebSocket(url, { headers, perMessageDeflate: false });
  ws.on("message", (data) => {
    const msg = decode(data);
    switch (msg.type) {
      case "hello":
        onHello(msg);
        break;
      case "ticks":
        streaming = true;
        tickFrames(msg).forEach((frame, i) => {
          const seq = msg.seq + i;
          if (lastSeq !== null && seq <= lastSeq) return; // already have it
          buffer.push([seq, frame]);
          lastSeq = seq;
          received++;
        });
        break;
      case "skip": // moved to the live edge: frames before to_seq never come
        console.log(`skip: ${msg.skipped ?? "uncounted"} frames (${msg.reason})`);
        skips++;
        while (buffer.length && buffer[buffer.length - 1][0] >= msg.to_seq) buffer.pop();
        lastSeq = msg.to_seq - 1;
        break;
      case "end":
        console.log(`end of stream at seq ${msg.seq}`);
        exitCode = 0;
        ws.close(1000);
        break;
      case "error": // a refused request; the connection stays unless the stream is unknown
        console.log(`server error ${msg.code}: ${msg.message}`);
        if (msg.code === "unknown_stream") exitCode = 2;
        break;
      default:
    }
  });
  ws.on("error", (err) => {
    console.error(`connection error: ${err.message}`);
    const status = /Unexpected server response: (\d+)/.exec(err.message); // ws's wording
    if (status && [401, 403, 404].includes(Number(status[1]))) exitCode = 2;
  });
  ws.on("close", (code) => {
    console.log(`connection closed (${code})`);
    if (stopping) finish(0);
    else if (exitCode !== null) finish(exitCode);
    else if (code === 4004) finish(2);
    else {
      if (streaming) backoffMs = 500;
      const delay = backoffMs * (0.5 + Math.random() / 2); // jitter: no stampede after a restart
      backoffMs = Math.min(MAX_BACKOFF_MS, backoffMs * 2);
      console.log(`reconnecting in ${(delay / 1000).toFixed(1)} s`);
      reconnects++;
      retryTimer = setTimeout(open, delay);
    }
  });
}

const player = setInterval(() => {
  const head = playhead();
  while (buffer.length && buffer[0][0] <= head) {
    const [seq, frame] = buffer.shift();
    played = [seq, frame.tick];
  }
}, 1000 / 64);

const status = setInterval(() => {
  if (!played) return;
  const lagMs = ((playhead() - played[0]) / rate) * 1000;
  console.log(`tick ${played[1]}  seq ${played[0]}  buffer ${buffer.length} frames  lag ${lagMs.toFixed(0)} ms  received ${received}/s  skips ${skips}  reconnects ${reconnects}`);
  received = 0;
}, 1000);

function finish(code) {
  clearInterval(player);
  clearInterval(status);
  clearTimeout(retryTimer);
  process.exit(code);
}

open();
if (durationS > 0) {
  setTimeout(() => {
    stopping = true;
    if (ws.readyState === WebSocket.CLOSED) finish(0); // waiting to reconnect
    else ws.close(1000);
  }, durationS * 1000);
}
