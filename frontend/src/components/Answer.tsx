// One model's streamed answer in the playground: the text as it arrives, a stop button (aborts the fetch),
// and at the end why it stopped, the tokens counted (usage) and how fast it came; an API error in words.
import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError } from "../api";
import { streamAnswer, type Message, type Sampling, type TokenUsage } from "../inference";
import { ApiErrorBox } from "./ErrorList";

export type AnswerPhase = "idle" | "waiting" | "streaming" | "done" | "stopped" | "error";
export interface AnswerState {
  phase: AnswerPhase; text: string; error: ApiError | null; usage: TokenUsage | null; finish: string | null;
  startedAt: number | null; firstAt: number | null; endedAt: number | null;
}
const IDLE: AnswerState = { phase: "idle", text: "", error: null, usage: null, finish: null, startedAt: null, firstAt: null, endedAt: null };
export const busy = (a: AnswerState) => a.phase === "waiting" || a.phase === "streaming";

/** One answer's state; `start` streams (replacing any answer in flight), `stop` aborts, `fail` shows an error. */
export function useAnswer() {
  const [answer, setAnswer] = useState<AnswerState>(IDLE);
  const ctl = useRef<AbortController | null>(null);
  useEffect(() => () => ctl.current?.abort(), []);  // leaving the page stops the stream

  const start = (model: string, input: { prompt: string } | { messages: Message[] }, sampling: Sampling) => {
    ctl.current?.abort();
    const c = new AbortController();
    ctl.current = c;
    setAnswer({ ...IDLE, phase: "waiting", startedAt: performance.now() });
    const mine = () => ctl.current === c;
    (async () => {
      try {
        for await (const p of streamAnswer(model, input, sampling, c.signal)) {
          if (!mine()) return;
          const now = performance.now();
          setAnswer((a) => ({
            ...a, phase: "streaming", text: a.text + p.text, usage: p.usage ?? a.usage, finish: p.finish_reason ?? a.finish,
            firstAt: a.firstAt ?? (p.text ? now : null),
          }));
        }
        if (mine()) setAnswer((a) => ({ ...a, phase: c.signal.aborted ? "stopped" : "done", endedAt: performance.now() }));
      } catch (e) {
        const error = e instanceof ApiError ? e : new ApiError(0, (e as Error).message || String(e));
        if (mine()) setAnswer((a) => ({ ...a, phase: "error", error, endedAt: performance.now() }));
      }
    })();
  };
  const stop = () => ctl.current?.abort();
  const fail = (error: ApiError) => { ctl.current?.abort(); ctl.current = null; setAnswer({ ...IDLE, phase: "error", error }); };
  const reset = () => { ctl.current?.abort(); ctl.current = null; setAnswer(IDLE); };
  return { answer, start, stop, fail, reset };
}

const secs = (ms: number) => `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;

function Summary({ a }: { a: AnswerState }) {
  if (a.phase === "idle") return <p class="answer-note muted">The answer streams here.</p>;
  if (a.phase === "waiting") return <p class="answer-note" role="status">Waiting for the first token…</p>;
  if (a.phase === "streaming") return <p class="answer-note" role="status">Streaming…</p>;
  if (a.phase === "error") return null;
  const bits: string[] = [a.phase === "stopped" ? "Stopped" : `Finished${a.finish ? ` (${a.finish === "length" ? "max tokens reached" : a.finish})` : ""}`];
  if (a.usage) bits.push(`${a.usage.prompt_tokens} prompt + ${a.usage.completion_tokens} completion = ${a.usage.total_tokens} tokens`);
  if (a.startedAt !== null && a.firstAt !== null) bits.push(`first token after ${secs(a.firstAt - a.startedAt)}`);
  if (a.usage && a.firstAt !== null && a.endedAt !== null && a.usage.completion_tokens > 1 && a.endedAt > a.firstAt)
    bits.push(`${((a.usage.completion_tokens - 1) / ((a.endedAt - a.firstAt) / 1000)).toFixed(1)} tokens/s`);
  return <p class="answer-note" role="status">{bits.join(" · ")}</p>;
}

export function AnswerPanel({ title, model, answer, onStop, onKeep, note }: {
  title: string; model: string | null; answer: AnswerState; onStop: () => void; onKeep?: () => void; note?: string;
}) {
  const running = busy(answer);
  return (
    <section class="card answer" aria-label={`${title} answer`} data-phase={answer.phase} data-model={model ?? ""}
             data-finish={answer.finish ?? ""} data-completion-tokens={answer.usage?.completion_tokens ?? ""}>
      <div class="answer-head">
        <h2>{title}</h2>
        {model && <code class="answer-model">{model}</code>}
        {running && <button type="button" class="danger" aria-label={`Stop the ${title.toLowerCase()} answer`} onClick={onStop}>Stop</button>}
      </div>
      {note && <p class="warning">{note}</p>}
      <div class={`answer-text${answer.text ? "" : " answer-empty"}`} data-testid="answer-text" aria-busy={running}>
        {answer.text}{running && <span class="caret" aria-hidden="true" />}
      </div>
      <Summary a={answer} />
      {answer.error && <ApiErrorBox error={answer.error} />}
      {onKeep && (answer.phase === "done" || answer.phase === "stopped") && answer.text && (
        <button type="button" class="link" onClick={onKeep}>Continue the chat with this answer</button>
      )}
    </section>
  );
}
