// The new job's base model and data: upload a JSONL file (every bad line listed) or pick one, and a validation set.
import { useState } from "preact/hooks";
import { api, ApiError, type Dataset, type Model } from "../api";
import { bytes, count } from "../format";
import type { JobForm, SetForm } from "../jobform";
import { ErrorList } from "./ErrorList";

const describe = (d: Dataset) => `${d.filename} · ${d.format} · ${d.rows} rows · ${d.id}`;

export function DataFields({ form, set, models, datasets, reloadDatasets }: {
  form: JobForm; set: SetForm; models: Model[]; datasets: Dataset[]; reloadDatasets: () => Promise<void>;
}) {
  const [uploading, setUploading] = useState(false);
  const [uploadError, setUploadError] = useState<ApiError | null>(null);
  const [uploaded, setUploaded] = useState<Dataset | null>(null);
  const chosen = datasets.find((d) => d.id === form.trainDs);

  const upload = async (input: HTMLInputElement) => {
    const file = input.files?.[0];
    if (!file) return;
    setUploading(true);
    setUploadError(null);
    setUploaded(null);
    try {
      const ds = await api.uploadDataset(file);
      setUploaded(ds);
      await reloadDatasets();
      set({ trainDs: ds.id });
    } catch (e) {
      setUploadError(e as ApiError);
    } finally {
      setUploading(false);
      input.value = "";
    }
  };
  const pick = (key: "model" | "trainDs" | "validDs") => (e: Event) => set({ [key]: (e.target as HTMLSelectElement).value });

  return (
    <fieldset>
      <legend>Model and data</legend>
      <div class="field">
        <label for="model">Base model</label>
        <select id="model" value={form.model} onChange={pick("model")}>
          {models.map((m) => <option value={m.id}>{m.id}{m.parameters ? ` · ${count(m.parameters)} params` : ""}{m.architecture ? ` · ${m.architecture}` : ""}</option>)}
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
        <select id="training-dataset" value={form.trainDs} onChange={pick("trainDs")}>
          {datasets.length === 0 && <option value="">No datasets yet: upload one above</option>}
          {datasets.map((d) => <option value={d.id}>{describe(d)}</option>)}
        </select>
        {chosen && (
          <p class="ds-info" id="training-dataset-info">
            {chosen.format} · {chosen.rows} rows · {bytes(chosen.bytes)}
            {chosen.label_names?.length ? ` · labels: ${chosen.label_names.join(", ")}` : ""}
            {chosen.truncated_rows ? ` · ${chosen.truncated_rows} rows truncated` : ""} · sha256 {chosen.sha256.slice(0, 12)}…
          </p>
        )}
      </div>
      <div class="field">
        <label for="validation-dataset">Validation dataset</label>
        <select id="validation-dataset" value={form.validDs} onChange={pick("validDs")}>
          <option value="">None: hold out 10% of the training set</option>
          {datasets.filter((d) => d.id !== form.trainDs).map((d) => <option value={d.id}>{describe(d)}</option>)}
        </select>
      </div>
    </fieldset>
  );
}
