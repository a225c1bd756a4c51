// Server-sent events read with fetch(), so the API key travels in the Authorization header (EventSource
// cannot send one). The parser follows the WHATWG event-stream rules and is fed text as it arrives: a read may
// end anywhere — inside a line, between the \r and \n of a \r\n (sse_starlette ends lines so), inside a UTF-8
// character (readSse decodes in streaming mode) — and no event is lost or split. tests/e2e/test_playground.py
// runs it in the browser over every split point of a stream.

/** One dispatched event: its data lines joined by \n, its type (null: "message") and the last event id seen. */
export interface SseEvent { data: string; event: string | null; id: string | null }

export class SseParser {
  private buffer = "";
  private pendingCR = false;  // a \r that ended the last piece: the \n of a \r\n may start the next
  private data: string[] = [];
  private event: string | null = null;
  /** The stream's last event id (kept across events, as the specification says; Last-Event-ID on reconnect). */
  lastEventId: string | null = null;

  /** Feed the next piece of text; returns the events it completed, in order. */
  push(text: string): SseEvent[] {
    if (this.pendingCR) text = "\r" + text;
    this.pendingCR = text.endsWith("\r");
    if (this.pendingCR) text = text.slice(0, -1);
    this.buffer += text.replace(/\r\n?/g, "\n");
    const out: SseEvent[] = [];
    let cut: number;
    while ((cut = this.buffer.indexOf("\n")) >= 0) {
      const line = this.buffer.slice(0, cut);
      this.buffer = this.buffer.slice(cut + 1);
      const ev = this.line(line);
      if (ev) out.push(ev);
    }
    return out;
  }

  /** The end of the stream: an event not closed by a blank line is dropped (as the specification says). */
  end(): SseEvent[] {
    const out: SseEvent[] = [];
    if (this.pendingCR) {  // a final lone \r still ends its line
      this.pendingCR = false;
      const ev = this.line(this.buffer);
      this.buffer = "";
      if (ev) out.push(ev);
    }
    this.buffer = "";
    this.data = [];
    this.event = null;
    return out;
  }

  private line(line: string): SseEvent | null {
    if (line === "") {  // a blank line dispatches the event, if it had data
      const ev = this.data.length ? { data: this.data.join("\n"), event: this.event, id: this.lastEventId } : null;
      this.data = [];
      this.event = null;
      return ev;
    }
    if (line.startsWith(":")) return null;  // a comment (keep-alive ping)
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
    return null;  // "retry" and unknown fields are ignored
  }
}

/** The events of a response body, as they arrive; stops (cancelling the read) when `signal` aborts. */
export async function* readSse(body: ReadableStream<Uint8Array>, signal?: AbortSignal): AsyncGenerator<SseEvent> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const parser = new SseParser();
  let finished = false;
  const onAbort = () => { reader.cancel().catch(() => {}); };
  signal?.addEventListener("abort", onAbort);
  try {
    while (!signal?.aborted) {
      const { value, done } = await reader.read();
      if (done) {
        finished = true;
        yield* parser.push(decoder.decode());
        yield* parser.end();
        return;
      }
      yield* parser.push(decoder.decode(value, { stream: true }));
    }
  } finally {
    signal?.removeEventListener("abort", onAbort);
    if (!finished) reader.cancel().catch(() => {});  // the reader stopped early: close the connection
  }
}
