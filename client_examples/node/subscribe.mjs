#!/usr/bin/env node
// Subscribe to an EEICT Stream live stream and print one status line a second.
// Protocol: docs/protocol.md. Same msgpack decoder as the browser radar (@msgpack/msgpack).
import { parseArgs } from "node:util";
import { decode, encode } from "@msgpack/msgpack";
import WebSocket from "ws";

const HELP = `usage: node subscribe.mjs [--url ws://127.0.0.1:8080] [--stream generated]
                          [--buffer SECONDS] [--duration SECONDS] [--token TOKEN]

Subscribes to /live/<stream>, keeps --buffer seconds of frames, plays them when the server
clock reaches epoch + seq / rate, and prints tick, buffer depth and lag once a second.

  --url URL          server (default ws://127.0.0.1:8080)
  --stream ID        live stream id, see /streams (default generated)
  --buffer SECONDS   frames to hold ahead (default 1)
  --duration SECONDS stop after this long, 0 = forever (default 0)
  --token TOKEN      bearer token when the server has one
  -h, --help         show this help`;

const { values: opts } = parseArgs({
  options: {
    url: { type: "string", default: "ws://127.0.0.1:8080" },
    stream: { type: "string", default: "generated" },
    buffer: { type: "string", default: "1" },
    duration: { type: "string", default: "0" },
    token: { type: "string", default: "" },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (opts.help) {
  console.log(HELP);
  process.exit(0);
}

const url = `${opts.url.replace(/\/+$/, "")}/live/${encodeURIComponent(opts.stream)}`;
const headers = opts.token ? { Authorization: `Bearer ${opts.token}` } : {};
const ws = new WebSocket(url, { headers, perMessageDeflate: false });
const buffer = []; // [seq, frame], oldest first
let rate = 64;
let epoch = 0;
let offset = 0; // server clock minus ours
let played = null; // [seq, tick] on screen
let received = 0;
let exitCode = 0;

const now = () => Date.now() / 1000;
const playhead = () => (now() + offset - epoch) * rate;

ws.on("message", (data) => {
  const msg = decode(data);
  switch (msg.type) {
    case "hello":
      rate = msg.stream.rate;
      epoch = msg.stream.epoch;
      offset = msg.server_time - now();
      ws.send(encode({ type: "subscribe", buffer: Math.min(msg.max_buffer, Math.round(Number(opts.buffer) * rate)) }));
      break;
    case "ticks":
      msg.frames.forEach((frame, i) => buffer.push([msg.seq + i, frame]));
      received += msg.frames.length;
      break;
    case "skip":
      console.log(`skip: ${msg.skipped} frames (${msg.reason})`);
      break;
    case "end":
      console.log(`end of stream at seq ${msg.seq}`);
      ws.close(1000);
      break;
    case "error":
      console.log(`server error ${msg.code}: ${msg.message}`);
      exitCode = 2;
      break;
    default:
  }
});
ws.on("error", (err) => {
  console.error(`connection error: ${err.message}`);
  exitCode = 1;
});
ws.on("close", (code) => {
  console.log(`connection closed (${code})`);
  process.exit(exitCode);
});

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
  console.log(`tick ${played[1]}  seq ${played[0]}  buffer ${buffer.length} frames  lag ${lagMs.toFixed(0)} ms  received ${received}/s`);
  received = 0;
}, 1000);

if (Number(opts.duration) > 0) {
  setTimeout(() => {
    clearInterval(player);
    clearInterval(status);
    ws.close(1000);
  }, Number(opts.duration) * 1000);
}
