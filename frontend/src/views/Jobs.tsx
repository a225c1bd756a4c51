// Jobs: one row per job with a live progress bar; newest first, paginated, filtered by status.
import { useEffect, useState } from "preact/hooks";
import { api, STATUSES } from "../api";
import { JobProgress, StatusBadge } from "../components/JobBits";
import { UsagePanel } from "../components/Usage";
import { count, time } from "../format";
import { useLive, useLoad, useTick } from "../hooks";
import { jobBudget, useMethods } from "../methods";

const PAGE = 20;

export function JobsView({ status }: { status: string }) {
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  useEffect(() => setCursors([null]), [status]);
  const after = cursors[cursors.length - 1];
  const page = useLoad(() => api.jobs({ status, after, limit: PAGE }), [status, after]);
  const methods = useMethods();
  useTick(1000);
  // any job changing state or progressing may change this page (a new job appears on the first page)
  useLive((ev) => ev.type === "status" || ev.type === "end" || ev.type === "metric", () => page.reload(), [page.reload], 800);

  const setStatus = (s: string) => { location.hash = s ? `#/jobs?status=${s}` : "#/jobs"; };
  const jobs = page.data?.data ?? [];

  return (
    <section aria-labelledby="jobs-title">
      <div class="heading">
        <h1 id="jobs-title">Jobs</h1>
        <a class="button" href="#/jobs/new">New job</a>
      </div>
      <UsagePanel />
      <div class="toolbar">
        <label for="status-filter">Status</label>
        <select id="status-filter" value={status} onChange={(e) => setStatus((e.target as HTMLSelectElement).value)}>
          <option value="">All</option>
          {STATUSES.map((s) => <option value={s}>{s}</option>)}
        </select>
      </div>
      {page.error && <p class="error" role="alert">Could not load jobs: {page.error}</p>}
      {!page.error && page.data && jobs.length === 0 && (
        <div class="empty">
          {status ? (
            <p>No {status} jobs{cursors.length > 1 ? " on this page" : ""}. <a href="#/jobs">Show all jobs</a>.</p>
          ) : (
            <p>No jobs yet. Upload a JSONL dataset and launch a fine-tuning run from <a href="#/jobs/new">New job</a>;
              it will show up here with its live progress.</p>
          )}
        </div>
      )}
      {jobs.length > 0 && (
        <table class="jobs">
          <caption class="sr-only">Fine-tuning jobs, newest first</caption>
          <thead>
            <tr>
              <th scope="col">Job</th><th scope="col">Status</th><th scope="col">Model</th><th scope="col">Method</th>
              <th scope="col">Budget</th><th scope="col" class="num">Trainable params</th><th scope="col">Progress</th>
              <th scope="col">Started</th><th scope="col">Finished</th>
            </tr>
          </thead>
          <tbody>
            {jobs.map((j) => (
              <tr data-job-id={j.id} key={j.id}>
                <td><a href={`#/jobs/${j.id}`}>{j.suffix ? `${j.id} (${j.suffix})` : j.id}</a></td>
                <td><StatusBadge job={j} />{j.error && <div class="row-error" title={j.error.message}>{j.error.message}</div>}</td>
                <td>{j.model}</td>
                <td>{j.method}</td>
                <td>{jobBudget(j, methods.data)}</td>
                <td class="num">{count(j.trainable_params)}</td>
                <td><JobProgress job={j} /></td>
                <td>{time(j.started_at)}</td>
                <td>{time(j.finished_at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {(cursors.length > 1 || page.data?.has_more) && <nav class="pager" aria-label="Pages">
        <button type="button" disabled={cursors.length === 1} onClick={() => setCursors(cursors.slice(0, -1))}>
          Previous page
        </button>
        <span>Page {cursors.length}</span>
        <button type="button" disabled={!page.data?.has_more}
                onClick={() => page.data?.last_id && setCursors([...cursors, page.data.last_id])}>
          Next page
        </button>
      </nav>}
    </section>
  );
}
