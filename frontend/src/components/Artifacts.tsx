// A job's artifacts: size, sha256, downloads checked against the sha256 as they stream (download.ts), and
// "Build merged model".
import { useEffect, useState } from "preact/hooks";
import { api, type Artifact, type Job } from "../api";
import { openSink, saveChecked } from "../download";
import { subscribe } from "../events";
import { bytes, time } from "../format";
import { useLoad } from "../hooks";

const ACTIVE = ["queued", "running"];

export function Artifacts({ job }: { job: Job }) {
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
    try {
      const sink = await openSink(a.name);  // first, while the click still lets a save dialog open
      if (!sink) { setMessage(null); return; }
      setMessage(`Downloading ${a.name}…`);
      const res = await api.download(job.id, a.name).catch(async (e) => { await sink.discard(); throw e; });
      const want = res.headers.get("X-Checksum-Sha256") ?? a.sha256;
      const saved = await saveChecked(res, sink, want);
      if (!saved.ok) { setMessage(null); setError(`${a.name}: the download's sha256 ${saved.sha256} is not the expected ${want}; nothing was saved, try again.`); return; }
      setMessage(`Downloaded ${a.name} (${bytes(saved.bytes)}), sha256 checked.`);
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
