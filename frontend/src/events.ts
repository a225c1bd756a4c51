// The one live connection of the page: GET /v1/events (every job of this key's owner) read with fetch()
// streaming, so the key travels in the Authorization header (EventSource cannot send headers). On a drop it
// reconnects with Last-Event-ID, so no event is missed; views subscribe to the parsed events.
import { auth, type JobEvent } from "./api";
import { readSse } from "./sse";

export type LiveState = "connecting" | "live" | "reconnecting" | "off";
type Listener = (ev: JobEvent) => void;

const listeners = new Set<Listener>();
const stateListeners = new Set<(s: LiveState) => void>();
let state: LiveState = "off";
let controller: AbortController | null = null;
let lastEventId: string | null = null;

function setState(s: LiveState) {
  state = s;
  stateListeners.forEach((fn) => fn(s));
}

export function subscribe(fn: Listener): () => void {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function onLiveState(fn: (s: LiveState) => void): () => void {
  stateListeners.add(fn);
  fn(state);
  return () => stateListeners.delete(fn);
}

function dispatch(id: string | null, data: string) {
  if (id) lastEventId = id;
  let ev: JobEvent;
  try { ev = JSON.parse(data); } catch { return; }
  listeners.forEach((fn) => { try { fn(ev); } catch (e) { console.error(e); } });
}

/** Dispatch every event of the stream until it ends or `signal` aborts (sse.ts parses; `:` lines are pings). */
async function read(body: ReadableStream<Uint8Array>, signal: AbortSignal) {
  for await (const ev of readSse(body, signal)) dispatch(ev.id, ev.data);
}

export function startLive(onUnauthorized: () => void) {
  stopLive();
  const ctl = new AbortController();
  controller = ctl;
  lastEventId = null;
  let delay = 1000;
  (async () => {
    setState("connecting");
    while (!ctl.signal.aborted) {
      try {
        const headers: Record<string, string> = { Authorization: `Bearer ${auth.get() ?? ""}`, Accept: "text/event-stream" };
        if (lastEventId) headers["Last-Event-ID"] = lastEventId;
        const res = await fetch("/v1/events", { headers, signal: ctl.signal, cache: "no-store" });
        if (res.status === 401) { setState("off"); onUnauthorized(); return; }
        if (res.ok && res.body) {
          setState("live");
          delay = 1000;
          await read(res.body, ctl.signal);
        }
      } catch { /* dropped: reconnect below */ }
      if (ctl.signal.aborted) break;
      setState("reconnecting");
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 15000);
    }
  })();
}

export function stopLive() {
  controller?.abort();
  controller = null;
  setState("off");
}
