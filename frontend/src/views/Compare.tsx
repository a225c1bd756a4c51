// Compare: pick jobs → one table (method, budget, trainable params, memory, accuracy, time), overlaid loss
// curves, and accuracy against trainable parameters (the plateau figure, on the user's own data).
import { api, type Job, type MethodInfo, type MetricPoint } from "../api";
import { Chart, PALETTE, type Series } from "../components/Chart";
import { elapsed, StatusBadge } from "../components/JobBits";
import { components } from "../components/MemoryChart";
import { selectionOf, ShareBar, targetColour } from "../components/Selection";
import { bytes, count, duration, num, percent } from "../format";
import { useLive, useLoad } from "../hooks";
import { jobBudget, useMethods } from "../methods";

function label(j: Job, methods: MethodInfo[] | null): string {
  return `${j.method} ${jobBudget(j, methods)}${j.suffix ? ` (${j.suffix})` : ""} · ${j.id.slice(-6)}`;
}

function totalMemory(j: Job): number | null {
  if (!j.memory) return null;
  return components(j.memory, true).find(([n]) => n === "Total")![1];
}

export function CompareView({ ids }: { ids: string[] }) {
  const jobs = useLoad(() => api.jobs({ limit: 100 }), []);
  const methods = useMethods().data;
  const picked = ids.join(",");
  const detail = useLoad(async () => {
    const out: { job: Job; metrics: MetricPoint[] }[] = [];
    for (const id of ids) {
      const [job, metrics] = await Promise.all([api.job(id), api.metrics(id)]);
      out.push({ job, metrics: metrics.data });
    }
    return out;
  }, [picked]);
  useLive((ev) => ids.includes(ev.job_id) && (ev.type === "metric" || ev.type === "end" || ev.type === "status"), () => detail.reload(), [picked, detail.reload], 3000);

  const setIds = (next: string[]) => { location.hash = next.length ? `#/compare?ids=${next.join(",")}` : "#/compare"; };
  const toggle = (id: string, on: boolean) => setIds(on ? [...ids, id] : ids.filter((x) => x !== id));
  const list = jobs.data?.data ?? [];
  const rows = detail.data ?? [];
  const colour = (i: number) => PALETTE[i % PALETTE.length];

  const lossSeries: Series[] = rows.flatMap(({ job, metrics }, i) => [
    { label: `${label(job, methods)} train`, color: colour(i), points: metrics.filter((p) => p.train_loss !== null).map((p) => [p.step, p.train_loss!] as [number, number]) },
    { label: `${label(job, methods)} eval`, color: colour(i), dashed: true, points: metrics.filter((p) => p.eval_loss !== null).map((p) => [p.step, p.eval_loss!] as [number, number]) },
  ]).filter((s) => s.points.length);
  const chose = rows.map(({ job }) => ({ job, sel: selectionOf(job.metrics) })).filter((r) => r.sel);
  const shareTargets = [...new Set(chose.flatMap(({ sel }) => Object.keys(sel!.by_target)))];
  const accSeries: Series[] = rows.map(({ job }, i) => ({
    label: label(job, methods), color: colour(i),
    points: typeof job.metrics?.eval_accuracy === "number" && job.trainable_params ? [[job.trainable_params, job.metrics.eval_accuracy as number]] : [],
  }));

  return (
    <section aria-labelledby="compare-title">
      <h1 id="compare-title">Compare jobs</h1>
      {jobs.error && <p class="error" role="alert">Could not load jobs: {jobs.error}</p>}
      {jobs.data && list.length === 0 && (
        <p class="empty">No jobs to compare yet. Launch two or more runs on the same data from <a href="#/jobs/new">New job</a>, e.g. SMT and LoRA with one budget.</p>
      )}
      {list.length > 0 && (
        <fieldset class="pick">
          <legend>Jobs to compare</legend>
          <div class="pick-list">
            {list.map((j) => (
              <label class="check" key={j.id}>
                <input type="checkbox" checked={ids.includes(j.id)} onChange={(e) => toggle(j.id, (e.target as HTMLInputElement).checked)} />
                <span>{j.id} · {j.method} · {jobBudget(j, methods)} · {j.model} · {j.status}</span>
              </label>
            ))}
          </div>
          {ids.length > 0 && <button type="button" class="link" onClick={() => setIds([])}>Clear selection</button>}
        </fieldset>
      )}
      {list.length > 0 && ids.length < 2 && <p class="empty">Pick two or more jobs above to compare them side by side.</p>}
      {detail.error && <p class="error" role="alert">Could not load the picked jobs: {detail.error}</p>}
      {rows.length > 0 && (
        <>
          <table class="compare" aria-label="Compared jobs">
            <thead>
              <tr>
                <th scope="col">Job</th><th scope="col">Status</th><th scope="col">Model</th><th scope="col">Method</th><th scope="col">Budget</th>
                <th scope="col" class="num">Trainable params</th><th scope="col" class="num">Training memory</th>
                <th scope="col" class="num">Eval accuracy</th><th scope="col" class="num">Eval loss</th><th scope="col" class="num">Time</th>
              </tr>
            </thead>
            <tbody>
              {rows.map(({ job: j }, i) => (
                <tr data-job-id={j.id}>
                  <th scope="row"><span class="swatch" style={{ background: colour(i) }} /> <a href={`#/jobs/${j.id}`}>{j.id}</a></th>
                  <td><StatusBadge job={j} /></td>
                  <td>{j.model}</td>
                  <td>{j.method}</td>
                  <td>{jobBudget(j, methods)}</td>
                  <td class="num">{count(j.trainable_params)}</td>
                  <td class="num">{bytes(totalMemory(j))}</td>
                  <td class="num">{typeof j.metrics?.eval_accuracy === "number" ? percent(j.metrics.eval_accuracy as number) : "—"}</td>
                  <td class="num">{num(j.metrics?.eval_loss)}</td>
                  <td class="num">{duration(elapsed(j))}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {chose.length > 0 && (
            <table class="compare" aria-label="Share of the chosen parameters by target">
              <caption>What the selecting jobs chose: share of their trained parameters per target</caption>
              <thead>
                <tr><th scope="col">Job</th>{shareTargets.map((t) => <th scope="col" class="num"><span class="swatch" style={{ background: targetColour(shareTargets, t) }} /> {t}</th>)}<th scope="col">Shares</th></tr>
              </thead>
              <tbody>
                {chose.map(({ job, sel }) => (
                  <tr data-job-id={job.id}>
                    <th scope="row"><a href={`#/jobs/${job.id}`}>{label(job, methods)}</a></th>
                    {shareTargets.map((t) => <td class="num" data-target={t} data-share={sel!.by_target[t]?.share ?? ""}>{sel!.by_target[t] ? percent(sel!.by_target[t].share) : "—"}</td>)}
                    <td><ShareBar shares={sel!.by_target} targets={shareTargets} /></td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
          <div class="charts">
            <Chart title="Loss curves" xLabel="step" series={lossSeries} empty="None of these jobs has recorded a loss yet." height={260} />
            <Chart title="Eval accuracy vs trainable parameters" xLabel="trainable parameters (log scale)" logX mode="points"
                   xFormat={(v) => count(v)} yFormat={(v) => percent(v, 0)} series={accSeries} height={260}
                   empty="Accuracy appears here once the picked jobs have evaluated." />
          </div>
        </>
      )}
    </section>
  );
}
