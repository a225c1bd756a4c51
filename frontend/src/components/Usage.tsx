// The owner's usage against the per-owner limits (GET /v1/usage): active jobs and stored bytes.
import { api } from "../api";
import { bytes, count } from "../format";
import { useLive, useLoad } from "../hooks";

export function UsagePanel() {
  const usage = useLoad(() => api.usage(), []);
  // a job queued, started or finished changes the counts; artifacts arrive with the end of a job
  useLive((ev) => ev.type === "status" || ev.type === "end", () => usage.reload(), [usage.reload], 1000);
  const u = usage.data;
  if (!u) return null;  // usage is a side note: a failed load shows nothing rather than an error
  const active = u.queued_jobs + u.running_jobs;
  const share = (used: number, limit: number) => Math.min(100, Math.round((used / limit) * 100));
  return (
    <section class="usage" aria-label="Usage" data-testid="usage">
      <span title={`at most ${count(u.limits.max_active_jobs_per_owner)} queued or running jobs`}>
        Active jobs <strong data-usage="active">{active}</strong> / {count(u.limits.max_active_jobs_per_owner)}
        {" "}({u.running_jobs} running, {u.queued_jobs} queued)
      </span>
      <span title="datasets and artifacts">
        Storage <strong data-usage="stored">{bytes(u.stored_bytes)}</strong> / {bytes(u.limits.max_stored_bytes_per_owner)}
        {" "}({share(u.stored_bytes, u.limits.max_stored_bytes_per_owner)}%)
      </span>
      <span title="the most steps one job may run">Max steps per job {count(u.limits.max_steps)}</span>
    </section>
  );
}
