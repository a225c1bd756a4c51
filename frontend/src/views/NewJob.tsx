// New job: model, dataset (upload or pick; errors shown by line), method, budget, what every method would
// train and need in memory for this model (before launch), hyperparameters with defaults, method options.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api, ApiError, METHODS, type Dataset, type Estimate, type Method } from "../api";
import { ErrorList } from "../components/ErrorList";
import { EstimateTable } from "../components/EstimateTable";
import { bytes, count, newId } from "../format";
import { useLoad } from "../hooks";
import { METHOD_LABELS, OPTIONS, parseBudget } from "../methods";

export function NewJobView() {
  const models = useLoad(() => api.models(), []);
  const datasets = useLoad(() => api.datasets(), []);
  const [model, setModel] = useState("");
  const [trainDs, setTrainDs] = useState("");
  const [validDs, setValidDs] = useState("");
  const [uploading, setUploading] = useState(false);
  const [uploadError, setUploadError] = useState<ApiError | null>(null);
  const [uploaded, setUploaded] = useState<Dataset | null>(null);
  const [method, setMethod] = useState<Method>("smt");
  const [budgetText, setBudgetText] = useState("0.01");
  const [targets, setTargets] = useState<string[]>(["q", "k", "v"]);
  const [hp, setHp] = useState({ epochs: "1", steps: "", learning_rate: "", batch_size: "8", max_seq_len: "256", lr_warmup_steps: "0", seed: "0", num_devices: "1" });
  const [checkpointing, setCheckpointing] = useState(false);
  const [opts, setOpts] = useState<Record<string, string>>({});
  const [suffix, setSuffix] = useState("");
  const [estimates, setEstimates] = useState<Partial<Record<Method, Estimate>>>({});
  const [estErrors, setEstErrors] = useState<Partial<Record<Method, string>>>({});
  const [submitError, setSubmitError] = useState<ApiError | null>(null);
  const [submitting, setSubmitting] = useState(false);
  const idem = useRef(newId());

  const modelList = models.data?.data ?? [];
  const dsList = datasets.data?.data ?? [];
  const current = modelList.find((m) => m.id === model);
  const chosenDs = dsList.find((d) => d.id === trainDs);
  // defaults once the lists arrive, never over a choice made meanwhile
  useEffect(() => { if (modelList.length) setModel((m) => m || modelList[0].id); }, [modelList.length]);
  useEffect(() => { if (dsList.length) setTrainDs((d) => d || dsList[0].id); }, [dsList.length]);
  useEffect(() => {  // keep only targets the model has
    if (current) setTargets((t) => { const kept = t.filter((x) => current.targets.includes(x)); return kept.length ? kept : current.targets.slice(0, 1); });
  }, [current?.id]);

  const budgetValue = parseBudget(budgetText);
  const budgetError = method !== "full" && budgetValue === null
    ? "Enter a fraction of the model in (0, 1) such as 0.01 or 1%, or a whole number of parameters such as 4096." : null;

  // every method's estimate for this model, refreshed (debounced) when the inputs change
  const chosenOptions = JSON.stringify(OPTIONS[method].map((f) => [f.key, (opts[`${method}.${f.key}`] ?? "").trim()]));
  const estKey = JSON.stringify([model, budgetValue, targets, hp.batch_size, hp.max_seq_len, method, chosenOptions, trainDs, checkpointing]);
  useEffect(() => {
    if (!model || budgetValue === null || targets.length === 0) return;
    const bs = Number(hp.batch_size) || 8;
    const sl = Number(hp.max_seq_len) || 256;
    let live = true;
    const t = setTimeout(async () => {
      const results = await Promise.all(METHODS.map(async (m) => {
        try {
          const p: Record<string, string | number> = { method: m, budget: budgetValue, batch_size: bs, max_seq_len: sl, targets: targets.join(",") };
          if (trainDs) p.training_dataset = trainDs;  // activations sized by the chosen rows' token lengths
          if (checkpointing) p.gradient_checkpointing = "true";
          const own = m === method ? typedOptions(m, opts) : {};
          if (Object.keys(own).length) p.method_options = JSON.stringify(own);  // e.g. SMT's block_size changes the count
          return [m, await api.estimate(model, p), null] as const;
        } catch (e) {
          return [m, null, (e as Error).message] as const;
        }
      }));
      if (!live) return;
      const est: Partial<Record<Method, Estimate>> = {};
      const errs: Partial<Record<Method, string>> = {};
      for (const [m, e, err] of results) { if (e) est[m] = e; if (err) errs[m] = err; }
      setEstimates(est);
      setEstErrors(errs);
    }, 250);
    return () => { live = false; clearTimeout(t); };
  }, [estKey]);

  const upload = async (input: HTMLInputElement) => {
    const file = input.files?.[0];
    if (!file) return;
    setUploading(true);
    setUploadError(null);
    setUploaded(null);
    try {
      const ds = await api.uploadDataset(file);
      setUploaded(ds);
      await datasets.reload();
      setTrainDs(ds.id);
    } catch (e) {
      setUploadError(e as ApiError);
    } finally {
      setUploading(false);
      input.value = "";
    }
  };

  const body = useMemo(() => {
    const h: Record<string, number | boolean> = {
      batch_size: Number(hp.batch_size), max_seq_len: Number(hp.max_seq_len), lr_warmup_steps: Number(hp.lr_warmup_steps),
      num_devices: Number(hp.num_devices) || 1, gradient_checkpointing: checkpointing,
    };
    if (hp.steps.trim()) h.steps = Number(hp.steps);
    else if (hp.epochs.trim()) h.epochs = Number(hp.epochs);
    if (hp.learning_rate.trim()) h.learning_rate = Number(hp.learning_rate);
    const options = typedOptions(method, opts);
    return {
      model, training_dataset: trainDs, validation_dataset: validDs || null, method,
      budget: method === "full" ? null : budgetValue, targets, hyperparameters: h, method_options: options,
      seed: Number(hp.seed) || 0, suffix: suffix.trim() || null,
    };
  }, [model, trainDs, validDs, method, budgetValue, targets, hp, checkpointing, opts, suffix]);

  const submit = async (e: Event) => {
    e.preventDefault();
    setSubmitError(null);
    if (!trainDs) { setSubmitError(new ApiError(0, "Choose a training dataset, or upload one first.", "training_dataset")); return; }
    if (budgetError) { setSubmitError(new ApiError(0, `Budget: ${budgetError}`, "budget")); return; }
    if (!targets.length) { setSubmitError(new ApiError(0, "Choose at least one target projection.", "targets")); return; }
    setSubmitting(true);
    try {
      const job = await api.createJob(body, idem.current);
      location.hash = `#/jobs/${job.id}`;
    } catch (err) {
      setSubmitError(err as ApiError);
      idem.current = newId();  // a corrected request is a new request
    } finally {
      setSubmitting(false);
    }
  };

  const setH = (k: keyof typeof hp) => (e: Event) => setHp({ ...hp, [k]: (e.target as HTMLInputElement).value });
  const fmtOf = (d: Dataset) => `${d.filename} · ${d.format} · ${d.rows} rows · ${d.id}`;

  if (models.error) return <p class="error" role="alert">Could not load the models: {models.error}</p>;
  if (models.data && modelList.length === 0)
    return <div class="empty"><h1>New job</h1><p>This service allows no models. Set <code>SPARSETUNE_MODELS</code> (alias → folder) and restart <code>sparsetune up</code>.</p></div>;

  return (
    <section aria-labelledby="new-title">
      <h1 id="new-title">New job</h1>
      <form onSubmit={submit} class="newjob" noValidate>
        <fieldset>
          <legend>Model and data</legend>
          <div class="field">
            <label for="model">Base model</label>
            <select id="model" value={model} onChange={(e) => setModel((e.target as HTMLSelectElement).value)}>
              {modelList.map((m) => <option value={m.id}>{m.id}{m.parameters ? ` · ${count(m.parameters)} params` : ""}{m.architecture ? ` · ${m.architecture}` : ""}</option>)}
            </select>
          </div>
          <div class="field">
            <label for="dataset-file">Upload a JSONL dataset</label>
            <input id="dataset-file" type="file" accept=".jsonl,.json,application/jsonl,text/plain" aria-describedby="dataset-help"
                   disabled={uploading} onChange={(e) => upload(e.target as HTMLInputElement)} />
            <p id="dataset-help" class="help">One JSON object a line, one format a file: <code>{"{prompt, completion}"}</code>,{" "}
              <code>{"{messages}"}</code>, <code>{"{text, label}"}</code> or <code>{"{prompt, choices, label}"}</code>.</p>
            {uploading && <p role="status">Uploading and checking every line…</p>}
            {uploaded && <p role="status" class="ok">Uploaded {uploaded.filename}: {uploaded.rows} rows, {uploaded.format}, {bytes(uploaded.bytes)}.</p>}
            {uploadError && <ErrorList error={uploadError} />}
          </div>
          <div class="field">
            <label for="training-dataset">Training dataset</label>
            <select id="training-dataset" value={trainDs} onChange={(e) => setTrainDs((e.target as HTMLSelectElement).value)}>
              {dsList.length === 0 && <option value="">No datasets yet: upload one above</option>}
              {dsList.map((d) => <option value={d.id}>{fmtOf(d)}</option>)}
            </select>
            {chosenDs && (
              <p class="ds-info" id="training-dataset-info">
                {chosenDs.format} · {chosenDs.rows} rows · {bytes(chosenDs.bytes)}
                {chosenDs.label_names?.length ? ` · labels: ${chosenDs.label_names.join(", ")}` : ""}
                {chosenDs.truncated_rows ? ` · ${chosenDs.truncated_rows} rows truncated` : ""} · sha256 {chosenDs.sha256.slice(0, 12)}…
              </p>
            )}
          </div>
          <div class="field">
            <label for="validation-dataset">Validation dataset</label>
            <select id="validation-dataset" value={validDs} onChange={(e) => setValidDs((e.target as HTMLSelectElement).value)}>
              <option value="">None: hold out 10% of the training set</option>
              {dsList.filter((d) => d.id !== trainDs).map((d) => <option value={d.id}>{fmtOf(d)}</option>)}
            </select>
          </div>
        </fieldset>

        <fieldset>
          <legend>Method and budget</legend>
          <div class="methods" role="radiogroup" aria-label="Method">
            {METHODS.map((m) => (
              <div class="radio" key={m}>
                <input type="radio" id={`method-${m}`} name="method" value={m} checked={method === m}
                       aria-describedby={`method-${m}-help`} onChange={() => setMethod(m)} />
                <label for={`method-${m}`}>{METHOD_LABELS[m][0]}</label>
                <span id={`method-${m}-help`} class="muted">{METHOD_LABELS[m][1]}</span>
              </div>
            ))}
          </div>
          <div class="field">
            <label for="budget">Budget</label>
            <input id="budget" value={budgetText} inputMode="decimal" disabled={method === "full"} aria-describedby="budget-help"
                   aria-invalid={budgetError ? "true" : undefined} onInput={(e) => setBudgetText((e.target as HTMLInputElement).value)} />
            <p id="budget-help" class="help">{budgetError ?? "A fraction of the model's parameters (0.01 or 1%) or a count of trainable parameters (4096). The same budget for every method compares like with like."}</p>
          </div>
          <fieldset class="inline">
            <legend>Target projections</legend>
            {(current?.targets ?? ["q", "k", "v"]).map((t) => (
              <label class="check" key={t}>
                <input type="checkbox" checked={targets.includes(t)}
                       onChange={(e) => setTargets((e.target as HTMLInputElement).checked ? [...targets, t] : targets.filter((x) => x !== t))} />
                {t}
              </label>
            ))}
          </fieldset>
          {model && <EstimateTable model={model} method={method} estimates={estimates} errors={estErrors} />}
          {OPTIONS[method].some((f) => (opts[`${method}.${f.key}`] ?? "").trim()) && (
            <p class="help" role="note">The {METHOD_LABELS[method][0]} row uses the options set below; the other methods use their defaults.</p>
          )}
        </fieldset>

        <fieldset>
          <legend>Hyperparameters</legend>
          <div class="grid">
            <div class="field"><label for="hp-epochs">Epochs</label>
              <input id="hp-epochs" inputMode="decimal" value={hp.epochs} onInput={setH("epochs")} disabled={!!hp.steps.trim()} /></div>
            <div class="field"><label for="hp-steps">Steps (instead of epochs)</label>
              <input id="hp-steps" inputMode="numeric" value={hp.steps} placeholder="from epochs" onInput={setH("steps")} /></div>
            <div class="field"><label for="hp-lr">Learning rate</label>
              <input id="hp-lr" inputMode="decimal" value={hp.learning_rate} placeholder="the method's default" onInput={setH("learning_rate")} /></div>
            <div class="field"><label for="hp-batch">Batch size</label>
              <input id="hp-batch" inputMode="numeric" value={hp.batch_size} onInput={setH("batch_size")} /></div>
            <div class="field"><label for="hp-seq">Max sequence length</label>
              <input id="hp-seq" inputMode="numeric" value={hp.max_seq_len} onInput={setH("max_seq_len")} /></div>
            <div class="field"><label for="hp-warmup">Warm-up steps</label>
              <input id="hp-warmup" inputMode="numeric" value={hp.lr_warmup_steps} onInput={setH("lr_warmup_steps")} /></div>
            <div class="field"><label for="hp-devices">Devices (data parallel)</label>
              <input id="hp-devices" inputMode="numeric" value={hp.num_devices} onInput={setH("num_devices")} /></div>
            <div class="field"><label for="hp-ckpt">
              <input id="hp-ckpt" type="checkbox" checked={checkpointing}
                onChange={(e) => setCheckpointing((e.target as HTMLInputElement).checked)} /> Gradient checkpointing</label>
              <p class="help">Less activation memory for some extra compute.</p></div>
            <div class="field"><label for="hp-seed">Seed</label>
              <input id="hp-seed" inputMode="numeric" value={hp.seed} onInput={setH("seed")} /></div>
            <div class="field"><label for="suffix">Name suffix</label>
              <input id="suffix" value={suffix} placeholder="optional" maxLength={64} onInput={(e) => setSuffix((e.target as HTMLInputElement).value)} /></div>
          </div>
        </fieldset>

        {OPTIONS[method].length > 0 && (
          <fieldset>
            <legend>{METHOD_LABELS[method][0]} options</legend>
            <div class="grid">
              {OPTIONS[method].map((f) => {
                const id = `opt-${method}-${f.key}`;
                const k = `${method}.${f.key}`;
                const set = (e: Event) => setOpts({ ...opts, [k]: (e.target as HTMLInputElement).value });
                return (
                  <div class="field" key={k}>
                    <label for={id}>{f.label}</label>
                    {Array.isArray(f.kind) || f.kind === "bool" ? (
                      <select id={id} value={opts[k] ?? ""} onChange={set}>
                        <option value="">default ({f.placeholder})</option>
                        {(Array.isArray(f.kind) ? f.kind : ["true", "false"]).map((v) => <option value={v}>{v}</option>)}
                      </select>
                    ) : (
                      <input id={id} inputMode={f.kind === "int" ? "numeric" : "decimal"} value={opts[k] ?? ""} placeholder={f.placeholder} onInput={set} />
                    )}
                  </div>
                );
              })}
            </div>
          </fieldset>
        )}

        {submitError && <ErrorList error={submitError} />}
        <div class="actions">
          <button type="submit" disabled={submitting}>{submitting ? "Launching…" : "Launch job"}</button>
          <a href="#/jobs">Cancel</a>
        </div>
      </form>
    </section>
  );
}

/** The form's option strings for ``method`` as the typed JSON a job (and an estimate) takes; empty ones left out. */
function typedOptions(method: Method, opts: Record<string, string>): Record<string, unknown> {
  const options: Record<string, unknown> = {};
  for (const f of OPTIONS[method]) {
    const v = (opts[`${method}.${f.key}`] ?? "").trim();
    if (!v) continue;
    options[f.key] = f.kind === "int" || f.kind === "float" ? Number(v) : f.kind === "bool" ? v === "true" : v;
  }
  return options;
}
