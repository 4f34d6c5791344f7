// The WebSocket client of docs/protocol.md: binary msgpack messages in order, compressed
// ticks (raw DEFLATE) inflated before anyone sees them, reconnect with backoff for live.
import { decode, encode } from "./vendor/msgpack.js";

export const canInflate = typeof DecompressionStream === "function";

/** Raw DEFLATE (RFC 1951) bytes -> bytes, with the browser's own inflater. */
export async function inflateRaw(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate-raw"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** The frames of a ``ticks`` message, compressed (``encoding: "deflate"``) or plain. */
export async function framesOf(msg) {
  if (msg.encoding === "deflate") return decode(await inflateRaw(msg.data));
  return msg.frames || [];
}

export class StreamClient {
  /**
   * @param {string} url  the WebSocket URL (with ?encoding=deflate when wanted)
   * @param {{onMessage, onState, reconnect: boolean}} options
   */
  constructor(url, { onMessage, onState, reconnect }) {
    this.url = url;
    this.onMessage = onMessage;
    this.onState = onState;
    this.reconnect = reconnect;
    this.retries = 0;
    this.closed = false;
    this.ws = null;
    this.chain = Promise.resolve(); // messages are handled one after another, inflated or not
  }

  open() {
    this.onState("connecting");
    const ws = new WebSocket(this.url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => { this.retries = 0; };
    ws.onmessage = (event) => {
      if (typeof event.data === "string") return; // the protocol is binary only
      const bytes = new Uint8Array(event.data);
      this.chain = this.chain.then(() => this.handle(ws, bytes));
    };
    ws.onclose = (event) => {
      if (this.closed || ws !== this.ws) return;
      this.onState("closed", `${event.code} ${event.reason || ""}`.trim());
      if (this.reconnect && event.code !== 4004) {
        const delay = Math.min(8000, 500 * 2 ** this.retries++) * (0.8 + 0.4 * Math.random());
        this.timer = setTimeout(() => this.closed || this.open(), delay);
      }
    };
    ws.onerror = () => this.onState("error");
  }

  async handle(ws, bytes) {
    if (this.closed || ws !== this.ws) return;
    try {
      const msg = decode(bytes);
      if (msg.type === "ticks") msg.frames = await framesOf(msg);
      this.onMessage(msg);
    } catch (err) {
      this.onState("error", `bad message: ${err.message}`);
    }
  }

  send(message) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(encode(message));
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    this.ws?.close(1000);
  }
}
