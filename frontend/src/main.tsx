// The dashboard's shell: sign-in gate, navigation, the one live connection and the hash routes.
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { auth, whenUnauthorized } from "./api";
import { onLiveState, startLive, stopLive, type LiveState } from "./events";
import { useHash } from "./hooks";
import { SignIn } from "./views/SignIn";
import { JobsView } from "./views/Jobs";
import { NewJobView } from "./views/NewJob";
import { JobDetailView } from "./views/JobDetail";
import { CompareView } from "./views/Compare";
import { WorkersView } from "./views/Workers";
import { PlaygroundView } from "./views/Playground";
import { WebhooksView } from "./views/Webhooks";
import "./style.css";

function LiveBadge() {
  const [s, setS] = useState<LiveState>("off");
  useEffect(() => onLiveState(setS), []);
  const words: Record<LiveState, string> = {
    connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", off: "Offline",
  };
  return <span class={`live live-${s}`} role="status" aria-live="polite" data-live={s}>{words[s]}</span>;
}

function route(hash: string) {
  const path = hash.replace(/^#/, "").split("?")[0];
  const params = new URLSearchParams(hash.split("?")[1] ?? "");
  if (path === "/jobs/new") return <NewJobView from={params.get("from")} />;
  const m = path.match(/^\/jobs\/(job_[\w-]+)$/);
  if (m) return <JobDetailView id={m[1]} />;
  if (path === "/workers") return <WorkersView />;
  if (path === "/webhooks") return <WebhooksView />;
  if (path === "/playground") return <PlaygroundView jobId={params.get("job")} />;
  if (path === "/compare") return <CompareView ids={(params.get("ids") ?? "").split(",").filter(Boolean)} />;
  return <JobsView status={params.get("status") ?? ""} />;
}

function App() {
  const [key, setKey] = useState(auth.get());
  const [notice, setNotice] = useState<string | null>(null);
  const hash = useHash();

  const signOut = (why: string | null) => {
    auth.clear();
    stopLive();
    setNotice(why);
    setKey(null);
  };
  useEffect(() => {
    whenUnauthorized(() => signOut("The service no longer accepts this API key. Sign in with a valid key."));
  }, []);
  useEffect(() => {
    if (!key) return;
    startLive(() => signOut("The service no longer accepts this API key. Sign in with a valid key."));
    return stopLive;
  }, [key]);

  if (!key) return <SignIn notice={notice} onSignedIn={(k) => { auth.set(k); setNotice(null); setKey(k); }} />;
  const here = hash.replace(/^#/, "").split("?")[0];
  const nav = (href: string, label: string, active: boolean) => (
    <a href={href} aria-current={active ? "page" : undefined}>{label}</a>
  );
  return (
    <>
      <header class="top">
        <span class="brand">sparsetune</span>
        <nav aria-label="Main">
          {nav("#/jobs", "Jobs", here === "/jobs" || here === "" || here === "/")}
          {nav("#/jobs/new", "New job", here === "/jobs/new")}
          {nav("#/compare", "Compare", here === "/compare")}
          {nav("#/playground", "Playground", here === "/playground")}
          {nav("#/workers", "Workers", here === "/workers")}
          {nav("#/webhooks", "Webhooks", here === "/webhooks")}
        </nav>
        <LiveBadge />
        <button type="button" class="link" onClick={() => signOut(null)}>Sign out</button>
      </header>
      <main>{route(hash)}</main>
    </>
  );
}

render(<App />, document.getElementById("app")!);
