// A job's event log, newest first: the stored events, then the live ones as they arrive.
import { useEffect, useState } from "preact/hooks";
import { api, type Job, type JobEvent } from "../api";
import { subscribe } from "../events";
import { num, time } from "../format";
import { useLoad } from "../hooks";

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

export function EventLog({ job }: { job: Job }) {
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
