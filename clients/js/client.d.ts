// Type declarations for client.js (hand-written; the module has no build step).
// The protocol is docs/protocol.md of rust-channels.

/** Close codes of the gateway protocol that the clients act on. */
export declare const CloseCode: Readonly<{
  NORMAL: 1000;
  UNAUTHORIZED: 4001;
  TOKEN_EXPIRED: 4002;
  FORBIDDEN: 4003;
  DISCONNECTED: 4004;
}>;

/** An error answer from the server, or a local failure (`disconnected`, `timeout`). */
export declare class ChannelsError extends Error {
  constructor(code: string, message?: string, frame?: ErrorFrame | null);
  /** `forbidden`, `invalid_name`, `bad_request`... (docs/protocol.md), or `disconnected` / `timeout`. */
  readonly code: string;
  /** The server's `error` frame, when there was one. */
  readonly frame: ErrorFrame | null;
}

/** Exponential backoff: retry `n` waits between half and all of `min(max, initial * factor ** n)` ms. */
export interface Backoff {
  /** Milliseconds (default 500). */
  initial?: number;
  /** Milliseconds (default 10000). */
  max?: number;
  /** Default 2. */
  factor?: number;
}

/** What to do after a close with `code`: reconnect, stop, or reconnect only with a new token. */
export type ReconnectVerdict = boolean | "new-token";

/** Options of {@link ReconnectingSocket} (and of {@link ChannelsClient}). */
export interface SocketOptions {
  /** The token for the first connection. */
  token?: string | null;
  /** Called for a token before the first connection (if `token` is not given), before every reconnect, and before expiry (ChannelsClient); `null` means "none": stop. */
  getToken?: () => Promise<string | null | undefined> | string | null | undefined;
  /** Where the token goes: `?token=` (default), the `token.TOKEN` subprotocol, or a `connect` frame. */
  tokenIn?: "query" | "subprotocol" | "frame";
  /** The query parameter for `tokenIn: "query"` (default `token`). */
  tokenParam?: string;
  /** Subprotocols to offer (replaced by `channels.v1, token.TOKEN` with `tokenIn: "subprotocol"`). */
  protocols?: string[];
  /** Reconnect delays. */
  backoff?: Backoff;
  /** How long an attempt may take to open, in ms, before it counts as failed (default 10000). */
  connectTimeout?: number;
  /** The reconnect policy (default {@link defaultShouldReconnect}). */
  shouldReconnect?: (code: number) => ReconnectVerdict;
  /** A WebSocket constructor (default the global one). */
  WebSocket?: typeof WebSocket;
}

/** The socket's life cycle. */
export type SocketState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

/** `detail` of a `close` or `disconnected` event. */
export interface CloseDetail {
  code: number;
  reason: string;
  /** Whether a new attempt is scheduled. */
  willReconnect: boolean;
  /** Milliseconds until it, or null. */
  delay: number | null;
  /** (`disconnected` only) whether the server had said `connected` on this socket. */
  wasConnected?: boolean;
}

/** One WebSocket at a time, reopened with backoff after drops; any protocol on top. */
export declare class ReconnectingSocket extends EventTarget {
  /** `url` may be a function, called before every attempt. */
  constructor(url: string | (() => string), options?: SocketOptions);
  readonly state: SocketState;
  /** The token in use (the latest from `token`, `getToken` or a refresh). */
  token: string | null;
  /** Whether a frame can be sent now. */
  readonly isOpen: boolean;
  /** Opens; closes the current socket first (so it also serves to switch `url`). */
  open(): void;
  /** Closes for good (until `open()`). */
  close(code?: number, reason?: string): void;
  /** Drops the current socket now and reconnects as after any drop. */
  drop(code: number, reason: string): void;
  /** Sends a frame as is; false when not open. */
  send(data: string | ArrayBufferLike | Blob | ArrayBufferView): boolean;
  /** Sends JSON text; false when not open. */
  sendJSON(value: unknown): boolean;
  addEventListener(type: "open", listener: (event: CustomEvent<Record<string, never>>) => void, options?: AddEventListenerOptions | boolean): void;
  addEventListener(type: "message", listener: (event: CustomEvent<{ data: string | ArrayBuffer; json: unknown }>) => void, options?: AddEventListenerOptions | boolean): void;
  addEventListener(type: "close", listener: (event: CustomEvent<CloseDetail>) => void, options?: AddEventListenerOptions | boolean): void;
  addEventListener(type: "error", listener: (event: CustomEvent<{ error: unknown }>) => void, options?: AddEventListenerOptions | boolean): void;
  addEventListener(type: "state", listener: (event: CustomEvent<{ state: SocketState }>) => void, options?: AddEventListenerOptions | boolean): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: AddEventListenerOptions | boolean): void;
}

/** The gateway's reconnect policy: 4001/4002/4003 only with a new token, 4004 never, else always. */
export declare function defaultShouldReconnect(code: number): ReconnectVerdict;

/** The delay in ms before retry `attempt` (0-based). */
export declare function backoffDelay(attempt: number, backoff?: Backoff): number;

/** Options of {@link ChannelsClient}. */
export interface ClientOptions extends SocketOptions {
  /** How long a request waits for its answer, in ms (default 10000). */
  requestTimeout?: number;
  /** How long before `expires_at` to refresh the token, in ms (default 10000; at most half the lifetime). */
  refreshMargin?: number;
}

/** A JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A layer message: an object with a string `type`. */
export interface LayerMessage {
  type: string;
  [key: string]: Json;
}

/** The server's `connected` frame. */
export interface Connected {
  type: "connected";
  protocol: number;
  channel: string;
  user: string | null;
  groups: string[];
  expires_at: number | null;
  ping_interval: number | null;
}

/** A `message` push. */
export interface Push {
  type: "message";
  /** The group it came through, when the server knows it. */
  group?: string;
  offset?: number;
  epoch?: string;
  data: LayerMessage;
}

/** The `subscribed` answer. */
export interface Subscribed {
  type: "subscribed";
  id?: number | string;
  group: string;
  recovered: boolean;
  reason?: "no_history" | "no_position" | "epoch_changed" | "too_old";
  offset?: number;
  epoch?: string;
  publications?: { offset: number; data: LayerMessage }[];
}

/** A `lost` frame: pushes of `group` may have been missed (docs/protocol.md). */
export interface Lost {
  type: "lost";
  group: string;
  reason: "epoch_changed" | "too_old" | "overflow";
  offset: number;
  epoch: string;
}

/** An `error` frame. */
export interface ErrorFrame {
  type: "error";
  id?: number | string;
  code: string;
  message: string;
}

/** Any answer to a request. */
export interface Answer {
  type: string;
  id?: number | string;
  [key: string]: Json | undefined;
}

/** What `subscribe` returns. */
export interface Subscription {
  readonly group: string;
  /** The first `subscribed` answer; rejects with a ChannelsError if the server refuses. */
  readonly ready: Promise<Subscribed>;
  /** Removes this handler; the last one leaves the group. */
  unsubscribe(): Promise<void>;
}

/** A client of the gateway protocol (docs/protocol.md) over a {@link ReconnectingSocket}. */
export declare class ChannelsClient extends EventTarget {
  /** `url`: `ws://host/ws` (or a function returning it). */
  constructor(url: string | (() => string), options?: ClientOptions);
  readonly socket: ReconnectingSocket;
  readonly state: SocketState;
  /** Whether the server said `connected` on the current socket. */
  readonly connected: boolean;
  /** The last `connected` frame (null while not connected). */
  readonly info: Connected | null;
  /** Resolves with the first `connected` frame; rejects if the client gives up first. */
  connect(): Promise<Connected>;
  /** Disconnects for good (until `connect()`). */
  close(code?: number, reason?: string): void;
  /** Calls `handler` for every push through `group`; resubscribes after reconnects. */
  subscribe(group: string, handler: (data: LayerMessage, push: Push) => void): Subscription;
  /** `group_send` of `data` to `group` (the token's `publish` claim must allow it). */
  publish(group: string, data: LayerMessage): Promise<Answer>;
  /** Sends a new token for the same user. */
  refresh(token: string): Promise<Answer>;
  /** Round trip to the server. */
  ping(): Promise<Answer>;
  /** Sends `frame` with a fresh `id`; resolves with the answer, rejects with a ChannelsError. */
  request(frame: { type: string; [key: string]: unknown }): Promise<Answer>;
  /** A raw frame for the backend worker (`--forward-channel`); false when not connected. */
  send(data: string | ArrayBufferLike | Blob | ArrayBufferView): boolean;
  addEventListener(type: "connected", listener: (event: CustomEvent<Connected>) => void, options?: AddEventListenerOptions | boolean): void;
  addEventListener(type: "disconnected", listener: (event: CustomEvent<CloseDetail>) => void, options?: AddEventListenerOptions | boolean): void;
  addEventListener(type: "subscribed", listener: (event: CustomEvent<Subscribed>) => void, options?: AddEventListenerOptions | boolean): void;
  addEventListener(type: "message", listener: (event: CustomEvent<Push>) => void, options?: AddEventListenerOptions | boolean): void;
  /** Pushes may have been missed; after `overflow` the client recovers by itself. */
  addEventListener(type: "lost", listener: (event: CustomEvent<Lost>) => void, options?: AddEventListenerOptions | boolean): void;
  addEventListener(type: "raw", listener: (event: CustomEvent<{ data: string | ArrayBuffer }>) => void, options?: AddEventListenerOptions | boolean): void;
  addEventListener(type: "error", listener: (event: CustomEvent<ChannelsError | Error>) => void, options?: AddEventListenerOptions | boolean): void;
  addEventListener(type: "state", listener: (event: CustomEvent<{ state: SocketState }>) => void, options?: AddEventListenerOptions | boolean): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: AddEventListenerOptions | boolean): void;
}
