// Playground: try a succeeded job. Causal-LM jobs (prompt/completion, chat, multiple-choice data): a prompt
// (POST /v1/completions) or a chat (POST /v1/chat/completions; chat-format jobs start in chat), answered by
// the fine-tuned model (the job's fine_tuned_model) beside the base model (the job's model), both streaming at
// once, each with its own stop button, usage at the end. Classification jobs: texts → labels with their
// probabilities (POST /v1/jobs/{id}/predict). The job comes from the route (#/playground?job=…, the job
// page's "Try it") or the picker of succeeded jobs. The task comes from the job's training dataset format.
import { useEffect, useState } from "preact/hooks";
import { api, ApiError, type Job } from "../api";
import { AnswerPanel, busy, useAnswer } from "../components/Answer";
import { ChatEditor } from "../components/ChatEditor";
import { ApiErrorBox } from "../components/ErrorList";
import { Predictions } from "../components/Predictions";
import { time } from "../format";
import { fineTunedModel, taskOf, type Message, type Sampling } from "../inference";
import { useLive, useLoad } from "../hooks";

type Mode = "completion" | "chat" | "classify";
const MODE_WORDS: Record<Mode, string> = { completion: "Prompt (completions)", chat: "Chat", classify: "Classify texts" };
const describe = (j: Job) => `${j.id}${j.suffix ? ` (${j.suffix})` : ""} · ${j.method} · ${j.model} · finished ${time(j.finished_at)}`;

/** Sampling parameters as typed (strings), checked into numbers; an error names the field as the API would. */
interface SamplingForm { temperature: string; max_tokens: string; seed: string }
function samplingOf(f: SamplingForm): Sampling | ApiError {
  const temperature = Number(f.temperature);
  if (f.temperature.trim() === "" || !Number.isFinite(temperature)) return new ApiError(0, "Temperature must be a number (0 is greedy).", "temperature");
  const max_tokens = Number(f.max_tokens);
  if (!Number.isInteger(max_tokens)) return new ApiError(0, "Max tokens must be a whole number.", "max_tokens");
  const seed = f.seed.trim() === "" ? null : Number(f.seed);
  if (seed !== null && !Number.isInteger(seed)) return new ApiError(0, "Seed must be a whole number, or empty for a random one.", "seed");
  return { temperature, max_tokens, seed };
}

function Generate({ job, modes }: { job: Job; modes: Mode[] }) {
  const ft = fineTunedModel(job);
  const [mode, setMode] = useState<Mode>(modes[0]);
  const [prompt, setPrompt] = useState("");
  const [messages, setMessages] = useState<Message[]>([{ role: "user", content: "" }]);
  const [form, setForm] = useState<SamplingForm>({ temperature: "0.7", max_tokens: "128", seed: "" });
  const [formError, setFormError] = useState<ApiError | null>(null);
  const tuned = useAnswer();
  const base = useAnswer();
  const running = busy(tuned.answer) || busy(base.answer);

  const submit = (e: Event) => {
    e.preventDefault();
    setFormError(null);
    const sampling = samplingOf(form);
    if (sampling instanceof ApiError) { setFormError(sampling); return; }
    let input: { prompt: string } | { messages: Message[] };
    if (mode === "chat") {
      const sent = messages.filter((m) => m.content.trim() !== "");
      if (!sent.length) { setFormError(new ApiError(0, "Write a message first.", "messages")); return; }
      input = { messages: sent };
    } else {
      if (!prompt.trim()) { setFormError(new ApiError(0, "Write a prompt first.", "prompt")); return; }
      input = { prompt };
    }
    if (ft) tuned.start(ft, input, sampling);
    else tuned.fail(new ApiError(0, "The service gave this job no fine_tuned_model name, so it cannot be served: update the service.", "model"));
    base.start(job.model, input, sampling);
  };
  const onSubmitKey = (e: KeyboardEvent) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) submit(e); };
  const keep = (text: string) => () => setMessages([...messages.filter((m) => m.content.trim() !== ""), { role: "assistant", content: text }, { role: "user", content: "" }]);
  const field = (k: keyof SamplingForm) => (e: Event) => setForm({ ...form, [k]: (e.target as HTMLInputElement).value });
  // the field a check here, or the API's answer to either model, names
  const invalid = (k: string) => ([formError, tuned.answer.error, base.answer.error].some((e) => e?.param === k) ? "true" : undefined);

  return (
    <>
      <form class="card playground-form" onSubmit={submit} noValidate aria-label="Prompt both models">
        {modes.length > 1 && (
          <fieldset class="inline">
            <legend>Try it with</legend>
            {modes.map((m) => (
              <label class="check">
                <input type="radio" name="pg-mode" value={m} checked={mode === m} onChange={() => { setMode(m); setFormError(null); }} />
                {MODE_WORDS[m]}
              </label>
            ))}
          </fieldset>
        )}
        {mode === "chat" ? (
          <ChatEditor messages={messages} set={setMessages} onSubmitKey={onSubmitKey} />
        ) : (
          <div class="field">
            <label for="pg-prompt">Prompt</label>
            <textarea id="pg-prompt" rows={5} value={prompt} aria-invalid={invalid("prompt")}
                      onInput={(e) => setPrompt((e.target as HTMLTextAreaElement).value)} onKeyDown={onSubmitKey} />
          </div>
        )}
        <fieldset class="inline sampling">
          <legend>Sampling</legend>
          <label for="pg-temperature">Temperature</label>
          <input id="pg-temperature" type="number" step="0.1" min="0" max="2" value={form.temperature} aria-invalid={invalid("temperature")}
                 onInput={field("temperature")} aria-describedby="pg-sampling-help" />
          <label for="pg-max-tokens">Max tokens</label>
          <input id="pg-max-tokens" type="number" step="1" min="1" value={form.max_tokens} aria-invalid={invalid("max_tokens")}
                 onInput={field("max_tokens")} />
          <label for="pg-seed">Seed</label>
          <input id="pg-seed" type="number" step="1" placeholder="random" value={form.seed} aria-invalid={invalid("seed")}
                 onInput={field("seed")} />
          <p id="pg-sampling-help" class="help">Both models get the same parameters; with a seed (or temperature 0) an answer can be repeated.</p>
        </fieldset>
        {formError && <ApiErrorBox error={formError} />}
        <div class="actions">
          <button type="submit" disabled={running}>{running ? "Answering…" : mode === "chat" ? "Send to both models" : "Generate both answers"}</button>
          {running && <button type="button" class="danger" onClick={() => { tuned.stop(); base.stop(); }}>Stop both</button>}
          <span class="help">Ctrl+Enter sends.</span>
        </div>
      </form>
      <div class="answers">
        <AnswerPanel title="Fine-tuned model" model={ft} answer={tuned.answer} onStop={tuned.stop}
                     onKeep={mode === "chat" ? keep(tuned.answer.text) : undefined} />
        <AnswerPanel title="Base model" model={job.model} answer={base.answer} onStop={base.stop}
                     onKeep={mode === "chat" ? keep(base.answer.text) : undefined} />
      </div>
    </>
  );
}

function TryJob({ job }: { job: Job }) {
  const ds = useLoad(async () => {
    if (!job.training_dataset) return null;
    try { return await api.dataset(job.training_dataset); } catch (e) { if ((e as ApiError).status === 404) return null; throw e; }
  }, [job.training_dataset]);
  if (ds.loading && !ds.data) return <p role="status">Loading the job's training data…</p>;
  const task = taskOf(ds.data?.format);
  const modes: Mode[] = task === "classification" ? ["classify"]
    : ds.data?.format === "chat" ? ["chat", "completion"]
    : task === "causal_lm" ? ["completion", "chat"]
    : ["completion", "chat", "classify"];  // the training data is gone: the task is unknown, so offer every way
  const ft = fineTunedModel(job);
  return (
    <div data-task={task ?? "unknown"}>
      <dl class="facts">
        <dt>Fine-tuned model</dt><dd><code data-fine-tuned-model={ft ?? ""}>{ft ?? "—"}</code></dd>
        <dt>Base model</dt><dd>{job.model}</dd>
        <dt>Method</dt><dd>{job.method}</dd>
        <dt>Trained on</dt>
        <dd>{ds.data ? `${ds.data.filename} · ${ds.data.format} · ${ds.data.rows} rows` : job.training_dataset ? `${job.training_dataset}` : "—"}
          {" "}· <a href={`#/jobs/${job.id}`}>job page</a></dd>
      </dl>
      {ds.error && <p class="error" role="alert">Could not load the training dataset: {ds.error}</p>}
      {!ds.error && !task && (
        <p class="warning" role="status">This job's training dataset is gone, so the playground cannot tell whether it generates
          text or classifies: pick how to try it.</p>
      )}
      {task === "classification"
        ? <Predictions job={job} labels={ds.data?.label_names ?? null} />
        : <ModePick job={job} modes={modes} labels={ds.data?.label_names ?? null} />}
    </div>
  );
}

/** Generation, or classification too when the task is unknown. */
function ModePick({ job, modes, labels }: { job: Job; modes: Mode[]; labels: string[] | null }) {
  const [classify, setClassify] = useState(false);
  if (!modes.includes("classify")) return <Generate job={job} modes={modes} />;
  return (
    <>
      <fieldset class="inline">
        <legend>This job</legend>
        <label class="check"><input type="radio" name="pg-task" checked={!classify} onChange={() => setClassify(false)} />generates text</label>
        <label class="check"><input type="radio" name="pg-task" checked={classify} onChange={() => setClassify(true)} />classifies texts</label>
      </fieldset>
      {classify ? <Predictions job={job} labels={labels} /> : <Generate job={job} modes={modes.filter((m) => m !== "classify")} />}
    </>
  );
}

export function PlaygroundView({ jobId }: { jobId: string | null }) {
  const jobs = useLoad(() => api.jobs({ status: "succeeded", limit: 100 }), []);
  useLive((ev) => ev.type === "end", () => jobs.reload(), [jobs.reload], 1500);  // a job that just succeeded
  const job = useLoad(async () => (jobId ? api.job(jobId) : null), [jobId]);
  const list = jobs.data?.data ?? [];
  const pick = (id: string) => { location.hash = id ? `#/playground?job=${id}` : "#/playground"; };
  // no job in the route: the newest succeeded one (replacing the entry, so Back leaves the playground)
  useEffect(() => { if (!jobId && list.length) location.replace(`#/playground?job=${list[0].id}`); }, [jobId, list.length]);
  const j = job.data;
  const options = j && !list.some((x) => x.id === j.id) ? [j, ...list] : list;

  return (
    <section aria-labelledby="playground-title" class="playground" data-job-id={j?.id ?? ""}>
      <h1 id="playground-title">Playground</h1>
      {jobs.error && <p class="error" role="alert">Could not load the succeeded jobs: {jobs.error}</p>}
      {jobs.data && list.length === 0 && !jobId && (
        <div class="empty">
          <p>No succeeded jobs to try yet. Launch one from <a href="#/jobs/new">New job</a>; when it succeeds, its fine-tuned
            model answers here beside its base model.</p>
        </div>
      )}
      {options.length > 0 && (
        <div class="field">
          <label for="pg-job">Job</label>
          <select id="pg-job" value={jobId ?? ""} onChange={(e) => pick((e.target as HTMLSelectElement).value)}>
            {!jobId && <option value="">Choose a succeeded job</option>}
            {options.map((x) => <option value={x.id}>{describe(x)}</option>)}
          </select>
        </div>
      )}
      {job.error && <p class="error" role="alert">Could not load job {jobId}: {job.error}</p>}
      {j && j.status !== "succeeded" && (
        <p class="warning" role="status">Job {j.id} is {j.status}: only a succeeded job can be tried.{" "}
          <a href={`#/jobs/${j.id}`}>Open the job</a>.</p>
      )}
      {j && j.status === "succeeded" && <TryJob job={j} key={j.id} />}
    </section>
  );
}
