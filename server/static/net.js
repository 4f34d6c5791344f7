// Where the server is: the HTTP base URL (same origin or the "server URL" field), the token,
// and the WebSocket port (the HTTP and WebSocket ports differ when run locally; /streams says
// which, and behind one proxy route both are the page's origin).

export class Server {
  constructor(base, token) {
    this.base = base;
    this.token = token;
    this.ports = null; // {ws, http} from /streams, once listed
  }

  url(path, query = {}) {
    const url = new URL(path, this.base);
    for (const [key, value] of Object.entries(query)) url.searchParams.set(key, value);
    // The token goes in the query, not a header: a header would need a CORS preflight.
    if (this.token) url.searchParams.set("token", this.token);
    return url;
  }

  async json(path) {
    const response = await fetch(this.url(path));
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  /** ``/streams`` with the ports noted; every page load lists streams first. */
  async streams() {
    const answer = await this.json("/streams");
    if (answer.ports) this.ports = answer.ports;
    return answer.streams || [];
  }

  wsUrl(path, query = {}) {
    const url = this.url(path, query);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const httpPort = url.port || (url.protocol === "wss:" ? "443" : "80");
    if (this.ports && String(this.ports.http) === httpPort) url.port = String(this.ports.ws);
    return url.href;
  }
}
