// A classification job in the playground: texts, one a line → each text's predicted label and every label's
// probability as a bar (POST /v1/jobs/{id}/predict).
import { useState } from "preact/hooks";
import { ApiError, type Job } from "../api";
import { predict, type Prediction } from "../inference";
import { percent } from "../format";
import { ApiErrorBox } from "./ErrorList";

export function Predictions({ job, labels }: { job: Job; labels: string[] | null }) {
  const [text, setText] = useState("");
  const [rows, setRows] = useState<{ text: string; p: Prediction }[] | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [running, setRunning] = useState(false);

  const submit = async (e: Event) => {
    e.preventDefault();
    const texts = text.split("\n").map((t) => t.trim()).filter(Boolean);
    setError(null);
    if (!texts.length) { setError(new ApiError(0, "Write at least one text to classify, one a line.", "texts")); return; }
    setRunning(true);
    try {
      const out = await predict(job.id, texts);
      setRows(texts.map((t, i) => ({ text: t, p: out[i] })).filter((r) => r.p));
    } catch (err) {
      setError(err instanceof ApiError ? err : new ApiError(0, (err as Error).message));
    } finally {
      setRunning(false);
    }
  };

  return (
    <>
      <form class="card" onSubmit={submit} noValidate aria-label="Classify texts">
        <div class="field">
          <label for="pg-texts">Texts to classify, one a line</label>
          <textarea id="pg-texts" rows={6} value={text} aria-describedby="pg-texts-help"
                    onInput={(e) => setText((e.target as HTMLTextAreaElement).value)}
                    onKeyDown={(e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) submit(e); }} />
          <p id="pg-texts-help" class="help">{labels?.length ? `Labels: ${labels.join(", ")}. ` : ""}Ctrl+Enter predicts.</p>
        </div>
        {error && <ApiErrorBox error={error} />}
        <div class="actions">
          <button type="submit" disabled={running}>{running ? "Predicting…" : "Predict labels"}</button>
        </div>
      </form>
      {rows && (
        <table class="predictions" aria-label="Predictions">
          <thead><tr><th scope="col">Text</th><th scope="col">Predicted label</th><th scope="col">Probabilities</th></tr></thead>
          <tbody>
            {rows.map(({ text: t, p }) => {
              const probs = Object.entries(p.probabilities).sort((a, b) => b[1] - a[1]);
              return (
                <tr data-label={p.label}>
                  <td class="pred-text">{t}</td>
                  <td><strong>{p.label}</strong></td>
                  <td>
                    <ul class="probs" aria-label={`Probabilities for “${t}”`}>
                      {probs.map(([label, prob]) => (
                        <li data-label={label} data-probability={prob} class={label === p.label ? "prob-top" : ""}>
                          <span class="prob-label">{label}</span>
                          <span class="share" role="img" aria-label={`${label} ${percent(prob)}`}><span style={{ width: `${Math.max(0, Math.min(1, prob)) * 100}%` }} /></span>
                          <span class="num">{percent(prob)}</span>
                        </li>
                      ))}
                    </ul>
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </>
  );
}
