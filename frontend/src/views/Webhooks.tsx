// Webhooks: the owner's endpoints for job events — add one (its signing secret shown once), delete, enable one
// that was disabled for failing, and see each endpoint's delivery attempts. Delivery is the workers' job.
import { useEffect, useState } from "preact/hooks";
import { time } from "../format";
import { useLive, useLoad } from "../hooks";
import { EVENTS, eventHelp, webhooksApi, type Webhook, type WebhookCreated, type WebhookEvent } from "../webhooks";

const REFRESH_MS = 5000;
const DEFAULT_EVENTS: WebhookEvent[] = ["fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled"];

function NewWebhookForm({ onCreated }: { onCreated: (w: WebhookCreated) => void }) {
  const [url, setUrl] = useState("");
  const [events, setEvents] = useState<WebhookEvent[]>(DEFAULT_EVENTS);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const toggle = (e: WebhookEvent, on: boolean) => setEvents(on ? [...events, e] : events.filter((x) => x !== e));
  const submit = async (ev: Event) => {
    ev.preventDefault();
    if (!events.length) { setError("Pick at least one event."); return; }
    setBusy(true);
    setError(null);
    try {
      onCreated(await webhooksApi.create(url.trim(), EVENTS.filter((e) => events.includes(e))));
      setUrl("");
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="card" onSubmit={submit} noValidate aria-label="Add a webhook">
      <h2>Add a webhook</h2>
      <div class="field">
        <label for="webhook-url">Endpoint URL</label>
        <input id="webhook-url" type="url" required placeholder="https://example.com/hooks/sparsetune" value={url}
               onInput={(e) => setUrl((e.target as HTMLInputElement).value)} />
      </div>
      <fieldset class="inline">
        <legend>Events</legend>
        {EVENTS.map((e) => (
          <label key={e} title={eventHelp(e)}>
            <input type="checkbox" checked={events.includes(e)} onChange={(x) => toggle(e, (x.target as HTMLInputElement).checked)} />
            {" "}<code>{e}</code>
          </label>
        ))}
      </fieldset>
      {error && <p class="error" role="alert">Could not add the webhook: {error}</p>}
      <div class="actions"><button type="submit" disabled={busy || !url.trim()}>{busy ? "Adding…" : "Add webhook"}</button></div>
    </form>
  );
}

function SecretOnce({ created, onDone }: { created: WebhookCreated; onDone: () => void }) {
  const [copied, setCopied] = useState<string | null>(null);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(created.secret);
      setCopied("Copied.");
    } catch {
      setCopied("Copying was not allowed here: select the secret and copy it by hand.");
    }
  };
  return (
    <div class="notice" role="status" aria-label="New webhook secret">
      <p><strong>Webhook {created.id} added.</strong> Its signing secret is shown only now: copy it into your receiver's
        configuration, where it verifies each delivery's <code>webhook-signature</code> (Standard Webhooks; the
        <code> standardwebhooks</code> package or the openai SDK's <code>webhooks.verify_signature</code>).</p>
      <div class="field">
        <label for="webhook-secret">Signing secret</label>
        <input id="webhook-secret" readOnly value={created.secret} onFocus={(e) => (e.target as HTMLInputElement).select()} />
      </div>
      <div class="actions">
        <button type="button" onClick={copy}>Copy secret</button>
        <button type="button" class="link" onClick={onDone}>I have copied it</button>
        {copied && <span>{copied}</span>}
      </div>
    </div>
  );
}

function Deliveries({ hook }: { hook: Webhook }) {
  const page = useLoad(() => webhooksApi.deliveries(hook.id), [hook.id]);
  useEffect(() => {
    const t = setInterval(() => page.reload(), REFRESH_MS);
    return () => clearInterval(t);
  }, [page.reload]);
  useLive((ev) => ev.type === "end", () => setTimeout(() => page.reload(), 1500), [page.reload], 800);
  const rows = page.data?.data ?? [];
  return (
    <section class="card" aria-label={`Deliveries of ${hook.id}`}>
      <h2>Deliveries to {hook.url}</h2>
      {page.error && <p class="error" role="alert">Could not load the deliveries: {page.error}</p>}
      {!page.error && page.data && rows.length === 0 && (
        <p class="empty">No delivery yet. Events go out within seconds of a job ending, from the workers.</p>
      )}
      {rows.length > 0 && (
        <table class="deliveries">
          <caption class="sr-only">Delivery attempts, newest first</caption>
          <thead>
            <tr><th scope="col">When</th><th scope="col">Event</th><th scope="col">Event id</th>
              <th scope="col" class="num">Attempt</th><th scope="col">Answer</th><th scope="col" class="num">Time</th></tr>
          </thead>
          <tbody>
            {rows.map((d) => (
              <tr key={d.id} data-delivery-id={d.id} data-status-code={d.status_code ?? ""}>
                <td>{time(d.created_at)}</td>
                <td><code>{d.event_type}</code></td>
                <td><code>{d.event_id}</code></td>
                <td class="num">{d.attempt}</td>
                <td class={d.status_code !== null && d.status_code < 300 ? "ok" : "row-error"}>
                  {d.status_code !== null && d.status_code < 300 ? `HTTP ${d.status_code}` : d.error ?? `HTTP ${d.status_code}`}
                </td>
                <td class="num">{d.duration_ms} ms</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

export function WebhooksView() {
  const page = useLoad(() => webhooksApi.list(), []);
  const [created, setCreated] = useState<WebhookCreated | null>(null);
  const [open, setOpen] = useState<string | null>(null);
  const [confirming, setConfirming] = useState<string | null>(null);
  const [actionError, setActionError] = useState<string | null>(null);
  const hooks = page.data?.data ?? [];
  const act = async (fn: () => Promise<unknown>) => {
    setActionError(null);
    try { await fn(); } catch (e) { setActionError((e as Error).message); }
    await page.reload();
  };
  const remove = (w: Webhook) => {
    if (confirming !== w.id) { setConfirming(w.id); return; }
    setConfirming(null);
    if (open === w.id) setOpen(null);
    act(() => webhooksApi.remove(w.id));
  };

  return (
    <section aria-labelledby="webhooks-title">
      <div class="heading"><h1 id="webhooks-title">Webhooks</h1></div>
      <p class="help">A webhook is called when one of your jobs succeeds, fails or is cancelled, or when its merged
        model is ready: a POST with <code>{'{"id": "evt_…", "object": "event", "type", "created_at", "data": {"id": "job_…"}}'}</code>,
        signed per Standard Webhooks. A delivery that gets no 2xx answer is retried on a schedule (about a day by
        default); an endpoint that fails a whole schedule is disabled until you enable it again.</p>
      <NewWebhookForm onCreated={(w) => { setCreated(w); page.reload(); }} />
      {created && <SecretOnce created={created} onDone={() => setCreated(null)} />}
      {page.error && <p class="error" role="alert">Could not load webhooks: {page.error}</p>}
      {actionError && <p class="error" role="alert">{actionError}</p>}
      {!page.error && page.data && hooks.length === 0 && (
        <div class="empty"><p>No webhooks yet. Add an endpoint above to hear about your jobs as they end.</p></div>
      )}
      {hooks.length > 0 && (
        <table class="webhooks">
          <caption class="sr-only">Your webhooks, newest first</caption>
          <thead>
            <tr><th scope="col">Endpoint</th><th scope="col">Events</th><th scope="col">Status</th>
              <th scope="col">Created</th><th scope="col">Actions</th></tr>
          </thead>
          <tbody>
            {hooks.map((w) => (
              <tr key={w.id} data-webhook-id={w.id} data-status={w.status}>
                <td title={w.id}>{w.url}</td>
                <td>{w.events.map((e) => <div key={e}><code>{e}</code></div>)}</td>
                <td>
                  <span class={`badge ${w.status === "active" ? "badge-succeeded" : "badge-failed"}`}>{w.status}</span>
                  {w.disabled_reason && <div class="row-error" title={w.disabled_reason}>{w.disabled_reason}</div>}
                </td>
                <td>{time(w.created_at)}</td>
                <td><div class="actions">
                  <button type="button" class="link" aria-expanded={open === w.id}
                          onClick={() => setOpen(open === w.id ? null : w.id)}>
                    {open === w.id ? "Hide deliveries" : "Deliveries"}
                  </button>
                  {w.status !== "active" && <button type="button" onClick={() => act(() => webhooksApi.enable(w.id))}>Enable</button>}
                  <button type="button" class="danger" onClick={() => remove(w)}>
                    {confirming === w.id ? "Delete webhook and its log" : "Delete"}
                  </button>
                  {confirming === w.id && <button type="button" class="link" onClick={() => setConfirming(null)}>Keep it</button>}
                </div></td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {open && hooks.some((w) => w.id === open) && <Deliveries hook={hooks.find((w) => w.id === open)!} />}
    </section>
  );
}
