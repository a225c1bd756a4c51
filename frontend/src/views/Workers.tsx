// Workers: the fleet as its heartbeats describe it — kind (trainer or inference), pool, device, status and the
// job in hand (a trainer) or the base models held (an inference process), refreshed live.
import { useEffect } from "preact/hooks";
import { api } from "../api";
import { bytes, time } from "../format";
import { useLive, useLoad, useTick } from "../hooks";

const REFRESH_MS = 5000;

export function WorkersView() {
  const page = useLoad(() => api.workers(), []);
  useTick(1000);
  useEffect(() => {
    const t = setInterval(() => page.reload(), REFRESH_MS);
    return () => clearInterval(t);
  }, [page.reload]);
  useLive((ev) => ev.type === "status", () => page.reload(), [page.reload], 800);
  const workers = page.data?.data ?? [];
  const ago = (ts: number) => `${Math.max(0, Math.round(Date.now() / 1000 - ts))} s ago`;

  return (
    <section aria-labelledby="workers-title">
      <div class="heading"><h1 id="workers-title">Workers</h1></div>
      <p class="help">Each worker process reports its pool, device and current job every few seconds. Jobs go to the
        smallest pool whose memory holds their estimate; a worker that stops reporting is shown as lost and its
        jobs move to another pool that fits. Inference processes answer the playground and the chat and completion
        routes; each lists the base models it holds.</p>
      {page.error && <p class="error" role="alert">Could not load workers: {page.error}</p>}
      {!page.error && page.data && workers.length === 0 && (
        <div class="empty"><p>No worker has reported yet. Start one with <code>sparsetune worker</code> (or
          <code> sparsetune up</code>), pointing at the same database and broker.</p></div>
      )}
      {workers.length > 0 && (
        <table class="workers">
          <caption class="sr-only">Worker processes, newest first</caption>
          <thead>
            <tr>
              <th scope="col">Worker</th><th scope="col">Kind</th><th scope="col">Status</th><th scope="col">Pool</th><th scope="col">Device</th>
              <th scope="col" class="num">Memory</th><th scope="col">Current job or models</th><th scope="col">Started</th>
              <th scope="col">Last heartbeat</th>
            </tr>
          </thead>
          <tbody>
            {workers.map((w) => (
              <tr data-worker-id={w.id} data-kind={w.kind} data-status={w.status} key={w.id}>
                <td title={w.id}>{w.host} · pid {w.pid}</td>
                <td>{w.kind}</td>
                <td><span class={`badge badge-${w.status}`}>{w.status}</span></td>
                <td>{w.pool}{w.pool_memory ? ` (${bytes(w.pool_memory)})` : ""}</td>
                <td>{w.device}</td>
                <td class="num">{bytes(w.device_memory)}</td>
                <td>{w.kind === "inference" ? (w.models.length ? `holds ${w.models.join(", ")}` : "no model loaded yet")
                  : w.current_job ? <a href={`#/jobs/${w.current_job}`}>{w.current_job}</a>
                  : w.status === "busy" ? "another owner's job" : "—"}</td>
                <td>{time(w.started_at)}</td>
                <td>{ago(w.last_seen_at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
