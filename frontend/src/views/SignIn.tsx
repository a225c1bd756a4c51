// Sign in with an API key; it is checked against the API and kept in sessionStorage (this tab only).
import { useState } from "preact/hooks";
import { ApiError, request } from "../api";

export function SignIn({ notice, onSignedIn }: { notice: string | null; onSignedIn: (key: string) => void }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: Event) => {
    e.preventDefault();
    const k = key.trim();
    if (!k) { setError("Enter an API key."); return; }
    setBusy(true);
    setError(null);
    try {
      await request("/v1/models", {}, k);
      onSignedIn(k);
    } catch (err) {
      const e2 = err as ApiError;
      setError(e2.status === 401
        ? "That API key was not accepted. Check it for a typo, or create a new key on the server with: sparsetune keys create --name NAME"
        : `Could not sign in: ${e2.message}`);
    } finally {
      setBusy(false);
    }
  };

  return (
    <main class="signin">
      <h1>sparsetune</h1>
      <p class="muted">Sparse fine-tuning (SMT, SNELL) with LoRA, DoRA and full fine-tuning baselines.</p>
      <form onSubmit={submit} aria-labelledby="signin-title">
        <h2 id="signin-title">Sign in</h2>
        {notice && <p class="notice" role="status">{notice}</p>}
        <label for="api-key">API key</label>
        <input id="api-key" name="api-key" type="password" autocomplete="off" spellcheck={false} value={key}
               aria-describedby="api-key-help" aria-invalid={error ? "true" : undefined}
               onInput={(e) => setKey((e.target as HTMLInputElement).value)} autofocus />
        <p id="api-key-help" class="help">
          <code>sparsetune up</code> prints <code>SPARSETUNE_API_KEY=…</code> when it creates the first key. The key is
          kept for this browser tab only.
        </p>
        {error && <p class="error" role="alert">{error}</p>}
        <button type="submit" disabled={busy}>{busy ? "Signing in…" : "Sign in"}</button>
      </form>
    </main>
  );
}
