// Small pieces every job view shares: the status badge and the live progress bar with steps and ETA.
import type { Job } from "../api";
import { duration } from "../format";

export function StatusBadge({ job }: { job: Job }) {
  const phase = job.status === "running" && job.phase ? ` · ${job.phase}` : "";
  const cancelling = job.cancel_requested && (job.status === "running" || job.status === "queued") ? " · cancelling" : "";
  return <span class={`badge badge-${job.status}`} data-status={job.status}>{job.status}{phase}{cancelling}</span>;
}

export function progressOf(job: Job): number {
  if (job.status === "succeeded") return 1;
  if (!job.total_steps) return 0;
  return Math.min(1, job.steps_completed / job.total_steps);
}

export function JobProgress({ job }: { job: Job }) {
  const frac = progressOf(job);
  const total = job.total_steps ?? "?";
  const left = job.estimated_finish ? job.estimated_finish - Date.now() / 1000 : null;
  let note = "";
  if (job.status === "running") {
    if (job.phase === "selection") note = " · selecting blocks";
    else if (job.phase === "evaluating" || job.phase === "saving") note = ` · ${job.phase}`;
    else if (left !== null) note = left > 1 ? ` · ETA ${duration(left)}` : " · finishing";
    else if (!job.total_steps) note = " · preparing";
  }
  else if (job.status === "queued") note = " · waiting for a worker";
  const neverRan = !job.started_at && (job.status === "cancelled" || job.status === "failed");
  const label = neverRan ? "never started" : `${job.steps_completed}/${total} steps${note}`;
  return (
    <div class="progress" data-steps={job.steps_completed} data-total-steps={job.total_steps ?? ""}>
      <div class="bar" role="progressbar" aria-label={`Progress of ${job.id}`} aria-valuemin={0} aria-valuemax={100}
           aria-valuenow={Math.round(frac * 100)} aria-valuetext={label}>
        <div class={`fill fill-${job.status}`} style={{ width: `${frac * 100}%` }} />
      </div>
      <span class="progress-text">{label}</span>
    </div>
  );
}

export function elapsed(job: Job): number | null {
  if (!job.started_at) return null;
  return (job.finished_at ?? Date.now() / 1000) - job.started_at;
}
