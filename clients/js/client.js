// @rust-channels/client: the browser client of channels-server's gateway
// protocol, version 1 (docs/protocol.md). One ES module, no dependencies, no
// build step. Two layers:
//
// - ReconnectingSocket: one WebSocket at a time, reopened after a drop with
//   jittered, bounded exponential backoff; asks getToken() for a token before
//   each attempt; knows which close codes must not loop. Any JSON protocol can
//   sit on it (the chat demo's does).
// - ChannelsClient: the gateway protocol on top: connect, subscribe with
//   handlers (resubscribed after every reconnect), publish and other requests
//   as Promises, token refresh before `expires_at`, ping keepalive, raw frames
//   for a backend worker.

/** Close codes of docs/protocol.md that the clients act on. */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  UNAUTHORIZED: 4001,
  TOKEN_EXPIRED: 4002,
  FORBIDDEN: 4003,
  DISCONNECTED: 4004,
});

/** The close code this client uses when a pong does not come back in time. */
const NO_PONG = 4000;

/** How long an attempt may take to open before it is given up, in ms. */
const DEFAULT_CONNECT_TIMEOUT = 10000;

/** Backoff defaults: the first retry comes after 0.25 to 0.5 s, none after more than 10 s. */
const DEFAULT_BACKOFF = Object.freeze({ initial: 500, max: 10000, factor: 2 });

/** An error answer from the server (`code` as in docs/protocol.md), or a local one. */
export class ChannelsError extends Error {
  constructor(code, message, frame = null) {
    super(message || code);
    this.name = "ChannelsError";
    this.code = code;
    this.frame = frame;
  }
}

/** The delay before retry `attempt` (0-based): half the capped exponential plus up to another half at random. */
export function backoffDelay(attempt, backoff = DEFAULT_BACKOFF) {
  const { initial, max, factor } = { ...DEFAULT_BACKOFF, ...backoff };
  const cap = Math.min(max, initial * factor ** attempt);
  return Math.round(cap / 2 + (Math.random() * cap) / 2);
}

function addToken(url, param, token) {
  return url + (url.includes("?") ? "&" : "?") + param + "=" + encodeURIComponent(token);
}

/**
 * One WebSocket at a time to `url` (a string or a function called before each
 * attempt), reopened after every close except a deliberate one.
 *
 * Events (CustomEvent `detail`): `open` {attempt}, `message` {data, json},
 * `close` {code, reason, willReconnect, delay}, `error` {error}, `state` {state}.
 */
export class ReconnectingSocket extends EventTarget {
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.options = options;
    this.token = options.token ?? null;
    this.backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this.state = "idle"; // idle | connecting | open | reconnecting | closed
    this.attempt = 0; // failed attempts in a row: drives the backoff
    this.socket = null;
    this.timer = null;
    this.needsToken = false; // the last close said the token is no good
    this.run = 0; // bumped by open() and close(): a pending attempt of an older run gives up
  }

  /** Opens the socket; closes the current one first (so it also serves to switch `url`). */
  open() {
    this.#detach(CloseCode.NORMAL, "reconnecting");
    this.attempt = 0;
    this.needsToken = false;
    this.#setState("connecting");
    this.#start();
  }

  /** Closes for good: no reconnect until open() is called again. */
  close(code = CloseCode.NORMAL, reason = "") {
    const wasActive = this.state !== "idle" && this.state !== "closed";
    this.#detach(code, reason);
    this.#setState("closed");
    if (wasActive) this.#emit("close", { code, reason, willReconnect: false, delay: null });
  }

  /** Whether a frame can be sent now. */
  get isOpen() {
    return this.socket !== null && this.socket.readyState === 1; // OPEN
  }

  /** Sends a string, Blob, ArrayBuffer or view as is; false when not open. */
  send(data) {
    if (!this.isOpen) return false;
    this.socket.send(data);
    return true;
  }

  /** Sends `value` as a JSON text frame; false when not open. */
  sendJSON(value) {
    return this.send(JSON.stringify(value));
  }

  /**
   * Gives up on the current socket at once and reconnects as after any drop
   * (a dead connection may take minutes to report its close).
   */
  drop(code, reason) {
    if (this.socket === null) return;
    this.#detach(code, reason);
    this.#retry(code, reason);
  }

  #detach(code, reason) {
    this.run += 1;
    clearTimeout(this.timer);
    const socket = this.socket;
    this.socket = null;
    // close() takes only 1000 and 3000-4999; anything else closes without a code.
    if (socket && (code === 1000 || (code >= 3000 && code <= 4999))) socket.close(code, reason);
    else if (socket) socket.close();
  }

  async #start() {
    const run = this.run;
    const { getToken } = this.options;
    if (getToken && (this.needsToken || this.token === null || this.attempt > 0)) {
      const previous = this.token;
      let token;
      try {
        token = await getToken();
      } catch (error) {
        if (run !== this.run) return;
        this.#emit("error", { error });
        this.#retry(1006, "getToken failed");
        return;
      }
      if (run !== this.run) return; // closed or reopened meanwhile
      if (token == null || (this.needsToken && token === previous)) {
        // Without a new token the server would refuse us again: stop.
        const reason = token == null ? "getToken gave no token" : "getToken gave the same token";
        this.#setState("closed");
        this.#emit("close", { code: CloseCode.UNAUTHORIZED, reason, willReconnect: false, delay: null });
        return;
      }
      this.token = token;
    }
    this.needsToken = false;
    let url = typeof this.url === "function" ? this.url() : this.url;
    const tokenIn = this.options.tokenIn ?? "query";
    let protocols = this.options.protocols ?? [];
    if (this.token !== null && tokenIn === "query") url = addToken(url, this.options.tokenParam ?? "token", this.token);
    if (this.token !== null && tokenIn === "subprotocol") protocols = ["channels.v1", "token." + this.token];
    const socket = new (this.options.WebSocket ?? WebSocket)(url, protocols);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    // A server that accepts TCP but never answers the upgrade (frozen, overloaded) must not hang us.
    const openTimer = setTimeout(() => {
      if (socket === this.socket && socket.readyState === 0) this.drop(1006, "connect timeout");
    }, this.options.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT);
    socket.onopen = () => {
      clearTimeout(openTimer);
      if (socket !== this.socket) return;
      this.attempt = 0;
      this.#setState("open");
      this.#emit("open", {});
    };
    socket.onmessage = (event) => {
      if (socket !== this.socket) return;
      let json;
      if (typeof event.data === "string") {
        try { json = JSON.parse(event.data); } catch { json = undefined; }
      }
      this.#emit("message", { data: event.data, json });
    };
    socket.onclose = (event) => {
      clearTimeout(openTimer);
      if (socket !== this.socket) return; // closed on purpose
      this.socket = null;
      this.#retry(event.code, event.reason);
    };
  }

  #retry(code, reason) {
    const decide = this.options.shouldReconnect ?? defaultShouldReconnect;
    const verdict = decide(code);
    if (verdict === false || (verdict === "new-token" && !this.options.getToken)) {
      this.#setState("closed");
      this.#emit("close", { code, reason, willReconnect: false, delay: null });
      return;
    }
    this.needsToken = verdict === "new-token";
    const delay = backoffDelay(this.attempt, this.backoff);
    this.attempt += 1;
    this.#setState("reconnecting");
    this.#emit("close", { code, reason, willReconnect: true, delay });
    const run = this.run;
    this.timer = setTimeout(() => { if (run === this.run) this.#start(); }, delay);
  }

  #setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.#emit("state", { state });
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/**
 * The gateway's reconnect policy: 4001/4003 and 4002 reconnect only with a
 * new token ("new-token"), 4004 (the backend disconnected us) never, anything
 * else (server restart, network loss, 1013, 4008...) always.
 */
export function defaultShouldReconnect(code) {
  switch (code) {
    case CloseCode.UNAUTHORIZED:
    case CloseCode.FORBIDDEN:
    case CloseCode.TOKEN_EXPIRED:
      return "new-token";
    case CloseCode.DISCONNECTED:
      return false;
    default:
      return true;
  }
}

/** Frame types the server sends in protocol v1; other text frames are a backend's own. */
const SERVER_TYPES = new Set(["connected", "subscribed", "unsubscribed", "published", "refreshed", "pong", "message", "lost", "error"]);

/**
 * A client of the gateway at `url` (`ws://host/ws`).
 *
 * Events (CustomEvent `detail`): `connected` (the `connected` frame),
 * `disconnected` {code, reason, willReconnect, delay}, `subscribed` (every
 * `subscribed` answer, resubscriptions too), `message` (every push), `raw`
 * {data} (frames from a backend worker), `error` (a ChannelsError or an
 * Error that belongs to no request), `state` {state}.
 */
export class ChannelsClient extends EventTarget {
  constructor(url, options = {}) {
    super();
    this.options = { requestTimeout: 10000, refreshMargin: 10000, ...options };
    this.socket = new ReconnectingSocket(url, this.options);
    this.info = null; // the last `connected` frame
    this.nextId = 1;
    this.pending = new Map(); // id -> {resolve, reject, timer}
    this.subscriptions = new Map(); // group -> {handlers: Set, offset, epoch}
    this.refreshTimer = null;
    this.pingTimer = null;
    this.socket.addEventListener("open", () => this.#onOpen());
    this.socket.addEventListener("message", (event) => this.#onFrame(event.detail));
    this.socket.addEventListener("close", (event) => this.#onClose(event.detail));
    this.socket.addEventListener("error", (event) => this.#emit("error", event.detail.error));
    this.socket.addEventListener("state", (event) => this.#emit("state", event.detail));
  }

  /** idle | connecting | open | reconnecting | closed (open: the socket; see `connected`). */
  get state() {
    return this.socket.state;
  }

  /** Whether the server has answered `connected` on the current socket. */
  get connected() {
    return this.info !== null;
  }

  /** Connects; resolves with the `connected` frame, rejects if the client gives up first. */
  connect() {
    const ready = new Promise((resolve, reject) => {
      const onConnected = (event) => { cleanup(); resolve(event.detail); };
      const onDisconnected = (event) => {
        if (event.detail.willReconnect) return;
        cleanup();
        reject(new ChannelsError("disconnected", `closed with ${event.detail.code} ${event.detail.reason}`.trim()));
      };
      const cleanup = () => {
        this.removeEventListener("connected", onConnected);
        this.removeEventListener("disconnected", onDisconnected);
      };
      this.addEventListener("connected", onConnected);
      this.addEventListener("disconnected", onDisconnected);
    });
    this.#reset("reconnecting");
    this.socket.open();
    return ready;
  }

  /** Disconnects for good (until connect() again). */
  close(code = CloseCode.NORMAL, reason = "") {
    this.socket.close(code, reason);
  }

  /**
   * Calls `handler(data, push)` for every push that comes through `group`
   * (pushes without a `group`, e.g. a Python `group_send`, reach only the
   * `message` event). The subscription is sent now or at the next connect,
   * and again after every reconnect, with `recover` from the last offset and
   * epoch seen. Returns {group, ready: Promise of the answer, unsubscribe()}.
   */
  subscribe(group, handler) {
    let entry = this.subscriptions.get(group);
    if (entry === undefined) {
      entry = { handlers: new Set(), offset: null, epoch: null };
      entry.ready = new Promise((resolve, reject) => { entry.settle = { resolve, reject }; });
      entry.ready.catch(() => {}); // the caller may never look; errors also reach `error`
      this.subscriptions.set(group, entry);
      if (this.connected) this.#sendSubscribe(group, entry);
    }
    const own = { handler };
    entry.handlers.add(own);
    return {
      group,
      ready: entry.ready,
      unsubscribe: () => this.#unsubscribe(group, own),
    };
  }

  /** Publishes `data` (an object with a string `type`) to `group`; resolves with `published`. */
  publish(group, data) {
    return this.request({ type: "publish", group, data });
  }

  /** Sends a new token (`refresh`); resolves with `refreshed`. */
  async refresh(token) {
    const answer = await this.request({ type: "refresh", token });
    this.socket.token = token;
    if (this.info) this.info.expires_at = answer.expires_at;
    this.#scheduleRefresh(answer.expires_at);
    return answer;
  }

  /** Sends `ping`; resolves with `pong`. */
  ping() {
    return this.request({ type: "ping" });
  }

  /**
   * Sends a request frame with a fresh `id`; resolves with the answer that
   * repeats it, rejects with a ChannelsError (`error.code`: the server's
   * code, or `disconnected`/`timeout`).
   */
  request(frame) {
    if (!this.connected) return Promise.reject(new ChannelsError("disconnected", "not connected"));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new ChannelsError("timeout", `no answer to ${frame.type} within ${this.options.requestTimeout} ms`));
      }, this.options.requestTimeout);
      this.pending.set(id, { resolve, reject, timer });
      this.socket.sendJSON({ ...frame, id });
    });
  }

  /** Sends a raw text or binary frame (for a backend worker); false when not connected. */
  send(data) {
    return this.connected && this.socket.send(data);
  }

  #onOpen() {
    const tokenIn = this.options.tokenIn ?? "query";
    // Without a token in the URL or subprotocol the server waits for `connect`.
    if (this.socket.token === null || tokenIn === "frame") {
      const frame = { type: "connect" };
      if (this.socket.token !== null) frame.token = this.socket.token;
      this.socket.sendJSON(frame);
    }
  }

  #onFrame({ data, json }) {
    const isProtocol = json !== null && typeof json === "object" && !Array.isArray(json) && SERVER_TYPES.has(json.type);
    if (!isProtocol) {
      this.#emit("raw", { data });
      return;
    }
    if (json.id !== undefined && this.pending.has(json.id)) {
      const { resolve, reject, timer } = this.pending.get(json.id);
      this.pending.delete(json.id);
      clearTimeout(timer);
      if (json.type === "error") reject(new ChannelsError(json.code, json.message, json));
      else resolve(json);
      return;
    }
    switch (json.type) {
      case "connected":
        this.#onConnected(json);
        break;
      case "message":
        this.#onPush(json);
        break;
      case "lost":
        this.#onLost(json);
        break;
      case "error":
        this.#emit("error", new ChannelsError(json.code, json.message, json));
        break;
      default: // an answer nobody waits for any more
        break;
    }
  }

  #onConnected(frame) {
    this.info = frame;
    this.#scheduleRefresh(frame.expires_at);
    this.#startPing(frame.ping_interval);
    this.#emit("connected", frame);
    for (const [group, entry] of this.subscriptions) this.#sendSubscribe(group, entry);
  }

  #onPush(push) {
    const entry = push.group === undefined ? undefined : this.subscriptions.get(push.group);
    if (entry && push.offset !== undefined) {
      entry.offset = push.offset;
      entry.epoch = push.epoch ?? null;
    }
    this.#emit("message", push);
    if (entry) {
      for (const { handler } of entry.handlers) {
        try { handler(push.data, push); } catch (error) { this.#emit("error", error); }
      }
    }
  }

  /**
   * The server says pushes of a group may have been missed. `overflow`: its
   * pushes stopped after `offset`; subscribe again with `recover` from the last
   * offset seen, which fills the gap. Otherwise (`epoch_changed`, `too_old`)
   * the messages are gone: pushes go on from the new position, and the `lost`
   * event tells the application to reload its state.
   */
  #onLost(frame) {
    const entry = this.subscriptions.get(frame.group);
    if (entry && frame.reason === "overflow") {
      if (this.connected) this.#sendSubscribe(frame.group, entry);
    } else if (entry) {
      entry.offset = frame.offset;
      entry.epoch = frame.epoch;
    }
    this.#emit("lost", frame);
  }

  #onClose({ code, reason, willReconnect, delay }) {
    const wasConnected = this.info !== null;
    this.#reset(`closed with ${code}`);
    this.#emit("disconnected", { code, reason, willReconnect, delay, wasConnected });
  }

  /** Forgets the current connection: its timers, and its requests (rejected). */
  #reset(why) {
    this.info = null;
    clearTimeout(this.refreshTimer);
    clearInterval(this.pingTimer);
    for (const { reject, timer } of this.pending.values()) {
      clearTimeout(timer);
      reject(new ChannelsError("disconnected", why));
    }
    this.pending.clear();
  }

  #sendSubscribe(group, entry) {
    const frame = { type: "subscribe", group };
    if (entry.offset !== null) frame.recover = { offset: entry.offset, epoch: entry.epoch };
    this.request(frame).then(
      (answer) => {
        // Recovered: exactly what was missed. Not recovered after an epoch change: what the
        // new epoch kept (what came before it is lost, and `subscribed` says so).
        for (const publication of answer.publications ?? []) {
          this.#onPush({ type: "message", group, epoch: answer.epoch, ...publication });
        }
        if (answer.offset !== undefined) {
          entry.offset = answer.offset;
          entry.epoch = answer.epoch ?? null;
        }
        entry.settle.resolve(answer); // the first answer settles `ready`; later ones are no-ops
        this.#emit("subscribed", answer);
      },
      (error) => {
        if (error.code === "disconnected" || error.code === "timeout") return; // asked again at the next connect
        // Refused (forbidden, invalid_name...): do not ask again after reconnects.
        if (this.subscriptions.get(group) === entry) this.subscriptions.delete(group);
        entry.settle.reject(error);
        this.#emit("error", error);
      },
    );
  }

  async #unsubscribe(group, own) {
    const entry = this.subscriptions.get(group);
    if (!entry || !entry.handlers.delete(own) || entry.handlers.size > 0) return;
    this.subscriptions.delete(group);
    if (this.connected) await this.request({ type: "unsubscribe", group });
  }

  #scheduleRefresh(expiresAt) {
    clearTimeout(this.refreshTimer);
    const { getToken, refreshMargin } = this.options;
    if (!getToken || expiresAt == null) return;
    const left = expiresAt * 1000 - Date.now();
    // Ask refreshMargin before expiry, or halfway for a short-lived token.
    const wait = Math.max(0, left - Math.min(refreshMargin, left / 2));
    this.refreshTimer = setTimeout(async () => {
      try {
        const token = await getToken();
        if (token != null && this.connected) await this.refresh(token);
      } catch (error) {
        this.#emit("error", error);
      }
    }, wait);
  }

  #startPing(intervalSeconds) {
    clearInterval(this.pingTimer);
    if (!intervalSeconds) return;
    const interval = intervalSeconds * 1000;
    this.pingTimer = setInterval(() => {
      const socket = this.socket.socket;
      const timer = setTimeout(() => {
        // No pong in time: the connection is dead even if the browser has not noticed.
        if (this.socket.socket === socket) this.socket.drop(NO_PONG, "no pong");
      }, interval);
      this.ping().then(() => clearTimeout(timer), () => {});
    }, interval);
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
