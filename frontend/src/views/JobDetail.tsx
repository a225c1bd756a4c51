// Job detail: live progress and curves, memory beside the reference method (full fine-tuning), the heatmap of
// the blocks a selecting method (SMT) chose, artifacts (size, sha256, download, build merged model), the event
// log, cancel, and for a succeeded job a link to try it in the playground. Which method is the reference and
// whether one selects blocks come from the API (GET /v1/methods, the estimate's and the job's memory), never from
// a method's name.
import { useEffect, useState } from "preact/hooks";
import { api, ApiError, type Job, type MetricPoint } from "../api";
import { Artifacts } from "../components/Artifacts";
import { EventLog } from "../components/EventLog";
import { Chart, type Series } from "../components/Chart";
import { Heatmap } from "../components/Heatmap";
import { selectionOf, SelectionSummary } from "../components/Selection";
import { elapsed, JobProgress, StatusBadge } from "../components/JobBits";
import { MemoryChart, type MemoryColumn } from "../components/MemoryChart";
import { count, duration, num, percent, time } from "../format";
import { useLive, useLoad, useTick } from "../hooks";
import { jobBudget, methodLabel, referenceMethod, useMethods } from "../methods";
import { subscribe } from "../events";

const ACTIVE = ["queued", "running"];

function Blocks({ job }: { job: Job }) {
  const blocks = useLoad(() => api.blocks(job.id).catch((e: ApiError) => { if (e.status === 404) return null; throw e; }), [job.id]);
  useLive((ev) => ev.job_id === job.id && (ev.type === "log" || ev.type === "end"), () => { if (!blocks.data) blocks.reload(); }, [job.id, blocks.data]);
  const steps = job.method_options?.selection_steps;
  return (
    <section aria-labelledby="blocks-title" class="card">
      <h2 id="blocks-title">Chosen blocks</h2>
      {blocks.error && <p class="error" role="alert">Could not load the chosen blocks: {blocks.error}</p>}
      {!blocks.error && !blocks.loading && !blocks.data && (
        <p class="empty">{ACTIVE.includes(job.status)
          ? `${methodLabel(job.method)[0]} is still choosing its blocks (a warm-up${steps ? ` of ${steps} steps` : ""}); the heatmap appears when it is done.`
          : "This job recorded no block selection."}</p>
      )}
      {blocks.data && <Heatmap blocks={blocks.data} />}
    </section>
  );
}

/** The estimate of `method` for the job's model, targets, batches, training rows (when still there) and
 * activation checkpointing; the job's budget and options only for its own method. */
function estimateFor(j: Job, method: string) {
  const own = method === j.method;
  const p: Record<string, string | number> = {
    method, batch_size: Number(j.hyperparameters.batch_size ?? 8), max_seq_len: Number(j.hyperparameters.max_seq_len ?? 256),
    targets: j.targets.join(","),
  };
  if (own && j.budget !== null) p.budget = j.budget;
  if (own && Object.keys(j.method_options ?? {}).length) p.method_options = JSON.stringify(j.method_options);
  if (j.training_dataset) p.training_dataset = j.training_dataset;
  if (j.hyperparameters.gradient_checkpointing) p.gradient_checkpointing = "true";
  const accumulation = Number(j.hyperparameters.gradient_accumulation_steps ?? 1);
  if (accumulation > 1) p.gradient_accumulation_steps = accumulation;
  return api.estimate(j.model, p);
}

export function JobDetailView({ id }: { id: string }) {
  const job = useLoad(() => api.job(id), [id]);
  const metrics = useLoad(() => api.metrics(id), [id]);
  const j = job.data;
  const methods = useMethods().data;
  const ref = referenceMethod(methods ?? []);
  const refEst = useLoad(async () => j && ref && ref.id !== j.method ? estimateFor(j, ref.id) : null, [j?.id, ref?.id]);
  const ownEst = useLoad(async () => j ? estimateFor(j, j.method) : null, [j?.id]);
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
  if (ownEst.data) memCols.push({ label: `${j.method}, estimated`, memory: ownEst.data.memory, measured: false, color: "#93c5fd" });
  if (ref && refEst.data) memCols.push({ label: `${methodLabel(ref.id)[0]}, estimated`, memory: refEst.data.memory, measured: false, color: "#9ca3af" });
  const selects = !!(j.memory?.selection || ownEst.data?.memory.selection);  // a selection warm-up ran, or would
  const m = j.metrics ?? {};
  const selection = selectionOf(j.metrics);
  const acc = typeof m.eval_accuracy === "number" ? m.eval_accuracy : null;
  const best = m.best && typeof m.best === "object" ? m.best as { metric: string; value: number; step: number } : null;
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
        {j.status === "succeeded" && (
          <a class="button" href={`#/playground?job=${j.id}`} title="Prompt the fine-tuned model beside its base model">Try it in the playground</a>
        )}
        {j.status === "succeeded" && (
          <a class="button" href={`#/jobs/new?from=${j.id}`} data-continue={j.id}
             title="A new job that starts from this one's adapter: same model, method, targets and budget; you pick the data and steps">Continue</a>
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
      {j.status === "queued" && (j.warnings ?? []).map((w) => <p class="warning" role="status">{w}</p>)}
      <JobProgress job={j} />
      <dl class="facts">
        {j.init_from && <><dt>Lineage</dt><dd data-init-from={j.init_from}>continued from job <a href={`#/jobs/${j.init_from}`}><code>{j.init_from}</code></a></dd></>}
        <dt>Model</dt><dd>{j.model}</dd>
        <dt>Method</dt><dd>{j.method}{optText ? ` (${optText})` : ""}</dd>
        <dt>Budget</dt><dd>{jobBudget(j, methods)}</dd>
        <dt>Targets</dt><dd>{j.targets.join(", ")}</dd>
        <dt>Trainable params</dt><dd data-trainable-params={j.trainable_params ?? ""}>{count(j.trainable_params)}{j.trainable_params && j.total_params ? ` of ${count(j.total_params)} (${percent(j.trainable_params / j.total_params, 3)})` : ""}</dd>
        <dt>Data</dt><dd>{j.training_dataset}{j.validation_dataset ? `, validation ${j.validation_dataset}` : j.holdout_fraction ? `, ${percent(j.holdout_fraction, 0)} held out for evaluation` : ""}</dd>
        <dt>Hyperparameters</dt><dd>{hpText}, seed {j.seed}</dd>
        {best && <><dt>Best evaluation</dt><dd data-best-step={best.step}>{best.metric} {best.value.toFixed(4)} at step {best.step}: adapter-best.safetensors, served and merged</dd></>}
        {j.stopped_early && <><dt>Stopped early</dt><dd data-stopped-early="true">after step {j.steps_completed} of {j.total_steps}: no better {best?.metric ?? "evaluation"} for {String(j.hyperparameters.early_stopping_patience)} evaluations</dd></>}
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

      {selection && <SelectionSummary selection={selection} />}
      {selects && <Blocks job={j} />}
      <Artifacts job={j} />
      <EventLog job={j} />
    </section>
  );
}
