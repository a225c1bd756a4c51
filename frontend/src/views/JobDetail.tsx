// Job detail: live progress and curves, memory beside full fine-tuning, SMT's block heatmap, artifacts
// (size, sha256, download, build merged model), the event log, and cancel.
import { useEffect, useState } from "preact/hooks";
import { api, ApiError, type Artifact, type Job, type JobEvent, type MetricPoint } from "../api";
import { Chart, type Series } from "../components/Chart";
import { Heatmap } from "../components/Heatmap";
import { elapsed, JobProgress, StatusBadge } from "../components/JobBits";
import { MemoryChart, type MemoryColumn } from "../components/MemoryChart";
import { budget, bytes, count, duration, num, percent, time } from "../format";
import { useLive, useLoad, useTick } from "../hooks";
import { subscribe } from "../events";

const ACTIVE = ["queued", "running"];

function eventText(ev: JobEvent): string {
  const d = ev.data ?? {};
  if (ev.type === "status") return `${d.status}${d.phase ? ` (${d.phase})` : ""}${d.error?.message ? `: ${d.error.message}` : ""}`;
  if (ev.type === "end") return `finished: ${d.status}${d.error?.message ? `: ${d.error.message}` : ""}`;
  if (ev.type === "metric") {
    const parts = ["train_loss", "eval_loss", "eval_accuracy", "learning_rate"].filter((k) => typeof d[k] === "number").map((k) => `${k} ${num(d[k])}`);
    return `step ${d.step ?? "?"}${d.total_steps ? `/${d.total_steps}` : ""}: ${parts.join(", ")}`;
  }
  const extra = Object.entries(d).filter(([k]) => k !== "level" && k !== "message").map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`);
  return `${d.message ?? ""}${extra.length ? ` (${extra.join(", ")})` : ""}`;
}

async function sha256Hex(blob: Blob): Promise<string | null> {
  if (!crypto.subtle) return null;  // only in secure contexts (https or localhost)
  const digest = await crypto.subtle.digest("SHA-256", await blob.arrayBuffer());
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

function Artifacts({ job }: { job: Job }) {
  const arts = useLoad(() => api.artifacts(job.id), [job.id, job.status]);
  const [message, setMessage] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [merging, setMerging] = useState(false);
  const list: Artifact[] = arts.data?.data ?? [];
  const hasMerged = list.some((a) => a.name === "merged.tar");
  useEffect(() => subscribe((ev) => {
    const msg = String(ev.data?.message ?? "");
    if (ev.job_id === job.id && ev.type === "log" && msg.startsWith("merge failed")) {
      setMerging(false);
      setMessage(null);
      setError(`Could not build the merged model: ${msg.replace(/^merge failed:\s*/, "")}`);
    }
  }), [job.id]);
  useEffect(() => {  // the merged model appears when the worker is done: look again every few seconds
    if (!merging || hasMerged) { if (hasMerged) setMerging(false); return; }
    const t = setInterval(() => arts.reload(), 3000);
    return () => clearInterval(t);
  }, [merging, hasMerged]);

  const download = async (a: Artifact) => {
    setError(null);
    setMessage(`Downloading ${a.name}…`);
    try {
      const res = await api.download(job.id, a.name);
      const blob = await res.blob();
      const want = res.headers.get("X-Checksum-Sha256") ?? a.sha256;
      const got = await sha256Hex(blob);
      if (got && got !== want) { setMessage(null); setError(`${a.name}: the download's sha256 ${got} is not the expected ${want}; try again.`); return; }
      const url = URL.createObjectURL(blob);
      const link = document.createElement("a");
      link.href = url;
      link.download = a.name;
      document.body.appendChild(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
      setMessage(`Downloaded ${a.name} (${bytes(blob.size)})${got ? ", sha256 checked" : ""}.`);
    } catch (e) {
      setMessage(null);
      setError(`Could not download ${a.name}: ${(e as Error).message}`);
    }
  };
  const merge = async () => {
    setError(null);
    try {
      const r = await api.buildMerged(job.id);
      setMerging(r.status !== "ready");
      setMessage(r.status === "ready" ? "The merged model is ready." : "Building the merged model; it appears in this list when ready.");
      arts.reload();
    } catch (e) {
      setError(`Could not build the merged model: ${(e as Error).message}`);
    }
  };

  return (
    <section aria-labelledby="artifacts-title" class="card">
      <h2 id="artifacts-title">Artifacts</h2>
      {arts.error && <p class="error" role="alert">Could not load artifacts: {arts.error}</p>}
      {!arts.error && list.length === 0 && (
        <p class="empty">{ACTIVE.includes(job.status) ? "The adapter and its config appear here when the job succeeds." :
          job.status === "succeeded" ? "No artifacts were stored." : `No artifacts: the job ${job.status}.`}</p>
      )}
      {list.length > 0 && (
        <table class="artifacts">
          <thead><tr><th scope="col">Name</th><th scope="col" class="num">Size</th><th scope="col">sha256</th><th scope="col">Created</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
          <tbody>
            {list.map((a) => (
              <tr data-artifact={a.name}>
                <th scope="row"><code>{a.name}</code></th>
                <td class="num">{bytes(a.bytes)}</td>
                <td><code class="sha">{a.sha256}</code></td>
                <td>{time(a.created_at)}</td>
                <td><button type="button" onClick={() => download(a)} aria-label={`Download ${a.name}`}>Download</button></td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {job.status === "succeeded" && !hasMerged && (
        <p><button type="button" onClick={merge} disabled={merging}>{merging ? "Building merged model…" : "Build merged model"}</button>{" "}
          <span class="help">A standard Hugging Face model folder (safetensors) with the adapter merged in, as <code>merged.tar</code>.</span></p>
      )}
      {message && <p role="status">{message}</p>}
      {error && <p class="error" role="alert">{error}</p>}
    </section>
  );
}

function EventLog({ job }: { job: Job }) {
  const initial = useLoad(() => api.events(job.id), [job.id]);
  const [live, setLive] = useState<JobEvent[]>([]);
  useEffect(() => subscribe((ev) => { if (ev.job_id === job.id) setLive((l) => [ev, ...l].slice(0, 500)); }), [job.id]);
  const seen = new Set<string>();
  const all = [...live, ...(initial.data?.data ?? [])].filter((e) => !seen.has(e.id) && !!seen.add(e.id))
    .sort((a, b) => Number(b.id) - Number(a.id));
  return (
    <section aria-labelledby="events-title" class="card">
      <h2 id="events-title">Event log</h2>
      {initial.error && <p class="error" role="alert">Could not load events: {initial.error}</p>}
      {all.length === 0 && !initial.error && <p class="empty">No events yet.</p>}
      {all.length > 0 && (
        <ol class="events" aria-label="Events, newest first" reversed>
          {all.map((e) => (
            <li class={`ev ev-${e.type} ${e.data?.level ? `lvl-${e.data.level}` : ""}`} data-event-id={e.id}>
              <time>{time(e.created_at)}</time> <span class="ev-type">{e.type}</span> <span>{eventText(e)}</span>
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}

function Blocks({ job }: { job: Job }) {
  const blocks = useLoad(() => api.blocks(job.id).catch((e: ApiError) => { if (e.status === 404) return null; throw e; }), [job.id]);
  useLive((ev) => ev.job_id === job.id && (ev.type === "log" || ev.type === "end"), () => { if (!blocks.data) blocks.reload(); }, [job.id, blocks.data]);
  const sel = job.method_options?.selection_steps;
  return (
    <section aria-labelledby="blocks-title" class="card">
      <h2 id="blocks-title">Chosen blocks</h2>
      {blocks.error && <p class="error" role="alert">Could not load the chosen blocks: {blocks.error}</p>}
      {!blocks.error && !blocks.loading && !blocks.data && (
        <p class="empty">{ACTIVE.includes(job.status)
          ? `SMT is still choosing its blocks (warm-up of ${sel ?? "up to 100"} steps); the heatmap appears when it is done.`
          : "This job recorded no block selection."}</p>
      )}
      {blocks.data && <Heatmap blocks={blocks.data} />}
    </section>
  );
}

export function JobDetailView({ id }: { id: string }) {
  const job = useLoad(() => api.job(id), [id]);
  const metrics = useLoad(() => api.metrics(id), [id]);
  const j = job.data;
  const fullEst = useLoad(async () => j ? api.estimate(j.model, {
    method: "full", budget: 0.5, batch_size: Number(j.hyperparameters.batch_size ?? 8),
    max_seq_len: Number(j.hyperparameters.max_seq_len ?? 256), targets: j.targets.join(","),
  }) : null, [j?.id]);
  const ownEst = useLoad(async () => j && j.method !== "full" ? api.estimate(j.model, {
    method: j.method, budget: j.budget ?? 0.01, batch_size: Number(j.hyperparameters.batch_size ?? 8),
    max_seq_len: Number(j.hyperparameters.max_seq_len ?? 256), targets: j.targets.join(","),
  }) : null, [j?.id]);
  const [actionError, setActionError] = useState<string | null>(null);
  const [confirmDelete, setConfirmDelete] = useState(false);
  useTick(1000);
  // metric events carry the same fields as /metrics rows: merge them in by step instead of refetching the list
  const [livePts, setLivePts] = useState<Record<number, Partial<MetricPoint>>>({});
  useEffect(() => setLivePts({}), [id]);
  useEffect(() => subscribe((ev) => {
    if (ev.job_id !== id || ev.type !== "metric" || typeof ev.data?.step !== "number") return;
    const fields: Partial<MetricPoint> = {};
    for (const k of ["train_loss", "eval_loss", "eval_accuracy", "learning_rate"] as const)
      if (typeof ev.data[k] === "number") fields[k] = ev.data[k];
    setLivePts((cur) => ({ ...cur, [ev.data.step]: { ...cur[ev.data.step], ...fields } }));
  }), [id]);
  useLive((ev) => ev.job_id === id, (ev) => {
    job.reload();
    if (ev.type === "end") metrics.reload();
  }, [id, job.reload, metrics.reload], 300);

  if (job.error && !j) return <section><h1>Job {id}</h1><p class="error" role="alert">Could not load the job: {job.error}</p><p><a href="#/jobs">Back to jobs</a></p></section>;
  if (!j) return <section><h1>Job {id}</h1><p role="status">Loading…</p></section>;

  const cancel = async () => {
    setActionError(null);
    try { await api.cancelJob(j.id); job.reload(); } catch (e) { setActionError(`Could not cancel: ${(e as Error).message}`); }
  };
  const remove = async () => {
    if (!confirmDelete) { setConfirmDelete(true); return; }
    setActionError(null);
    try { await api.deleteJob(j.id); location.hash = "#/jobs"; } catch (e) { setActionError(`Could not delete: ${(e as Error).message}`); setConfirmDelete(false); }
  };
  const byStep = new Map<number, MetricPoint>();
  for (const p of metrics.data?.data ?? []) byStep.set(p.step, p);
  for (const [step, p] of Object.entries(livePts)) {
    const base = byStep.get(+step) ?? { step: +step, train_loss: null, eval_loss: null, eval_accuracy: null,
                                        learning_rate: null, tokens_per_second: null, memory: null };
    byStep.set(+step, { ...base, ...p });
  }
  const pts = [...byStep.values()].sort((a, b) => a.step - b.step);
  const steps: [number, number] | undefined = j.total_steps ? [1, j.total_steps] : undefined;
  const line = (k: "train_loss" | "eval_loss" | "eval_accuracy" | "learning_rate") =>
    pts.filter((p) => typeof p[k] === "number").map((p) => [p.step, p[k] as number] as [number, number]);
  const memCols: MemoryColumn[] = [];
  if (j.memory) memCols.push({ label: `This job (${j.method}), measured`, memory: j.memory, measured: true, color: "#2563eb" });
  const est = j.method === "full" ? fullEst.data : ownEst.data;
  if (est) memCols.push({ label: `${j.method}, estimated`, memory: est.memory, measured: false, color: "#93c5fd" });
  if (fullEst.data && j.method !== "full") memCols.push({ label: "Full fine-tuning, estimated", memory: fullEst.data.memory, measured: false, color: "#9ca3af" });
  const m = j.metrics ?? {};
  const acc = typeof m.eval_accuracy === "number" ? m.eval_accuracy : null;
  const hpText = Object.entries(j.hyperparameters).filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => `${k} ${v}`).join(", ");
  const optText = Object.entries(j.method_options ?? {}).map(([k, v]) => `${k} ${v}`).join(", ");

  return (
    <section aria-labelledby="job-title" data-job-id={j.id} data-status={j.status}>
      <div class="heading">
        <h1 id="job-title">Job <code>{j.id}</code>{j.suffix ? ` (${j.suffix})` : ""}</h1>
        <StatusBadge job={j} />
        {ACTIVE.includes(j.status) && (
          <button type="button" class="danger" onClick={cancel} disabled={j.cancel_requested}>
            {j.cancel_requested ? "Cancelling…" : "Cancel job"}
          </button>
        )}
        {!ACTIVE.includes(j.status) && (
          <>
            <button type="button" class="danger" onClick={remove}>{confirmDelete ? "Delete job and its artifacts" : "Delete job"}</button>
            {confirmDelete && <button type="button" class="link" onClick={() => setConfirmDelete(false)}>Keep it</button>}
          </>
        )}
      </div>
      {actionError && <p class="error" role="alert">{actionError}</p>}
      {j.error && <p class="error" role="alert">The job failed ({j.error.code}): {j.error.message}</p>}
      <JobProgress job={j} />
      <dl class="facts">
        <dt>Model</dt><dd>{j.model}</dd>
        <dt>Method</dt><dd>{j.method}{optText ? ` (${optText})` : ""}</dd>
        <dt>Budget</dt><dd>{budget(j.budget, j.method)}</dd>
        <dt>Targets</dt><dd>{j.targets.join(", ")}</dd>
        <dt>Trainable params</dt><dd data-trainable-params={j.trainable_params ?? ""}>{count(j.trainable_params)}{j.trainable_params && j.total_params ? ` of ${count(j.total_params)} (${percent(j.trainable_params / j.total_params, 3)})` : ""}</dd>
        <dt>Data</dt><dd>{j.training_dataset}{j.validation_dataset ? `, validation ${j.validation_dataset}` : j.holdout_fraction ? `, ${percent(j.holdout_fraction, 0)} held out for evaluation` : ""}</dd>
        <dt>Hyperparameters</dt><dd>{hpText}, seed {j.seed}</dd>
        <dt>Created</dt><dd>{time(j.created_at)}</dd>
        <dt>Started</dt><dd>{time(j.started_at)}</dd>
        <dt>Finished</dt><dd>{time(j.finished_at)}</dd>
        <dt>Time</dt><dd>{duration(elapsed(j))}{j.trained_tokens ? `, ${count(j.trained_tokens)} tokens` : ""}</dd>
        {acc !== null && <><dt>Eval accuracy</dt><dd data-eval-accuracy={acc}>{percent(acc)}</dd></>}
        {typeof m.eval_loss === "number" && <><dt>Eval loss</dt><dd>{num(m.eval_loss)}</dd></>}
      </dl>

      <section aria-labelledby="curves-title" class="card">
        <h2 id="curves-title">Training curves</h2>
        {metrics.error && <p class="error" role="alert">Could not load metrics: {metrics.error}</p>}
        <div class="charts">
          <Chart title="Loss" xLabel="step" xDomain={steps} empty={j.status === "queued" ? "Waiting for the job to start." : "No loss recorded yet."}
                 series={[{ label: "train loss", color: "#2563eb", points: line("train_loss") },
                          { label: "eval loss", color: "#dc2626", points: line("eval_loss"), dashed: true }].filter((s) => s.points.length) as Series[]} />
          <Chart title="Eval accuracy" xLabel="step" xDomain={steps} yFormat={(v) => percent(v, 0)} empty="Accuracy appears after an evaluation."
                 series={[{ label: "eval accuracy", color: "#16a34a", points: line("eval_accuracy") }]} />
          <Chart title="Learning rate" xLabel="step" xDomain={steps} empty="No learning rate recorded yet."
                 series={[{ label: "learning rate", color: "#9333ea", points: line("learning_rate") }]} />
        </div>
      </section>

      <section aria-labelledby="memory-title" class="card">
        <h2 id="memory-title">Memory</h2>
        {memCols.length ? <MemoryChart columns={memCols} /> : <p class="empty">Memory figures appear once the run reports them.</p>}
      </section>

      {j.method === "smt" && <Blocks job={j} />}
      <Artifacts job={j} />
      <EventLog job={j} />
    </section>
  );
}
