// The public REST API (../shared/INTERFACE.md), typed, with its one error shape turned into words.

export type Status = "queued" | "running" | "succeeded" | "failed" | "cancelled";
export const STATUSES: Status[] = ["queued", "running", "succeeded", "failed", "cancelled"];

export interface Page<T> { object: "list"; data: T[]; has_more: boolean; last_id: string | null }
export interface Memory {
  weights?: number; trainable?: number; gradients?: number; optimizer?: number; activations?: number; peak?: number;
  selection?: number;  // SMT's warm-up: gradient sums of every targeted matrix (freed before training)
}
export interface Job {
  id: string; status: Status; phase: string | null; cancel_requested: boolean; model: string; method: string;
  budget: number | null; targets: string[]; training_dataset: string | null; validation_dataset: string | null;
  holdout_fraction: number | null; trainable_params: number | null; total_params: number | null;
  steps_completed: number; total_steps: number | null; trained_tokens: number; estimated_finish: number | null;
  metrics: Record<string, unknown> | null; memory: Memory | null; error: { code: string; message: string } | null;
  created_at: number; started_at: number | null; finished_at: number | null;
  hyperparameters: Record<string, unknown>; method_options: Record<string, unknown>; seed: number;
  suffix: string | null; attempts: number; pool?: string | null; estimated_memory?: number | null;
  worker?: string | null; warnings?: string[];  // notes from creation, e.g. no live worker: it waits queued
}
export interface Worker {
  id: string; host: string; pid: number; pool: string; pool_memory: number | null; device: string;
  device_memory: number | null; status: "idle" | "busy" | "stopped" | "lost"; current_job: string | null;
  started_at: number; last_seen_at: number;
}
export interface Dataset {
  id: string; filename: string; format: string; rows: number; bytes: number; sha256: string;
  truncated_rows: number; label_names?: string[] | null; created_at: number;
}
export interface Model { id: string; parameters: number | null; architecture: string | null; targets: string[] }
/** One option of a method as GET /v1/methods lists it (default null: the method computes it; see help). */
export interface MethodOption {
  name: string; type: "integer" | "number" | "boolean" | "string"; default: unknown;
  minimum: number | null; maximum: number | null; enum: unknown[] | null; help: string;
}
export interface MethodInfo { id: string; object: "method"; uses_budget: boolean; options: MethodOption[] }
export interface Estimate {
  model: string; method: string; budget: number | null; targets: string[]; trainable_params: number;
  total_params: number; memory: Memory; device?: "cpu" | "cuda"; sequence_length?: number;
  training_dataset?: string | null; tokens?: { rows: number; longest: number; shortest: number; exact: boolean } | null;
}
export interface MetricPoint {
  step: number; train_loss: number | null; eval_loss: number | null; eval_accuracy: number | null;
  learning_rate: number | null; tokens_per_second: number | null; memory: Memory | null;
}
export interface Block { row: number; col: number; height: number; width: number; score: number }
export interface BlockModule { name: string; layer: number; target: string; rows: number; cols: number; blocks: Block[] }
export interface Blocks { block_size: number; modules: BlockModule[] }
export interface Artifact { name: string; bytes: number; sha256: string; created_at: number }
export interface JobEvent { id: string; job_id: string; type: string; data: Record<string, any>; created_at: number }
export interface Usage {
  object: "usage"; queued_jobs: number; running_jobs: number; stored_bytes: number;
  limits: { max_active_jobs_per_owner: number; max_steps: number; max_stored_bytes_per_owner: number };
}
export interface LineError { line?: number; field?: string | null; message: string }

/** An API error in words: the server's message, the parameter it names and per-line details. */
export class ApiError extends Error {
  constructor(public status: number, message: string, public param: string | null = null,
              public details: LineError[] = [], public total: number | null = null) {
    super(message);
  }
}

const KEY = "sparsetune.apiKey";
export const auth = {
  get: (): string | null => sessionStorage.getItem(KEY),
  set: (key: string) => sessionStorage.setItem(KEY, key),
  clear: () => sessionStorage.removeItem(KEY),
};

type Unauthorized = () => void;
let onUnauthorized: Unauthorized = () => {};
export function whenUnauthorized(fn: Unauthorized) { onUnauthorized = fn; }

async function errorFrom(res: Response): Promise<ApiError> {
  let body: any = null;
  try { body = await res.json(); } catch { /* not JSON */ }
  const e = body?.error;
  if (e?.message) return new ApiError(res.status, e.message, e.param ?? null, e.details ?? [], e.total ?? null);
  const words: Record<number, string> = {
    401: "the API key was not accepted", 404: "not found", 409: "conflict", 413: "the file is too large",
    502: "the service is unreachable", 503: "the service is not ready",
  };
  return new ApiError(res.status, `${words[res.status] ?? "request failed"} (HTTP ${res.status})`);
}

/** Call the API with the session's key; throws ApiError. `key` overrides the stored key (sign-in check). */
export async function request(path: string, init: RequestInit = {}, key?: string): Promise<Response> {
  const headers = new Headers(init.headers);
  headers.set("Authorization", `Bearer ${key ?? auth.get() ?? ""}`);
  let res: Response;
  try {
    res = await fetch(path, { ...init, headers });
  } catch {
    throw new ApiError(0, "cannot reach the sparsetune service; is `sparsetune up` running?");
  }
  if (!res.ok) {
    const err = await errorFrom(res);
    if (res.status === 401 && key === undefined) onUnauthorized();
    throw err;
  }
  return res;
}

export async function getJSON<T>(path: string): Promise<T> {
  return (await request(path)).json();
}

export async function sendJSON<T>(path: string, body: unknown, method = "POST", headers: Record<string, string> = {}): Promise<T> {
  const res = await request(path, {
    method, body: body === undefined ? undefined : JSON.stringify(body),
    headers: { "Content-Type": "application/json", ...headers },
  });
  return res.status === 204 ? (undefined as T) : res.json();
}

export function query(params: Record<string, string | number | null | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : "";
}

export const api = {
  models: () => getJSON<Page<Model>>("/v1/models"),
  methods: () => getJSON<Page<MethodInfo>>("/v1/methods"),
  estimate: (model: string, p: Record<string, string | number>) =>
    getJSON<Estimate>(`/v1/models/${encodeURIComponent(model)}/estimate${query(p)}`),
  datasets: () => getJSON<Page<Dataset>>("/v1/datasets?limit=100"),
  uploadDataset: async (file: File): Promise<Dataset> => {
    const form = new FormData();
    form.append("file", file, file.name);
    return (await request("/v1/datasets", { method: "POST", body: form })).json();
  },
  jobs: (p: { status?: string; after?: string | null; limit?: number }) =>
    getJSON<Page<Job>>(`/v1/jobs${query({ limit: p.limit ?? 20, status: p.status, after: p.after })}`),
  job: (id: string) => getJSON<Job>(`/v1/jobs/${id}`),
  createJob: (body: unknown, idempotencyKey: string) => sendJSON<Job>("/v1/jobs", body, "POST", { "Idempotency-Key": idempotencyKey }),
  cancelJob: (id: string) => sendJSON<Job>(`/v1/jobs/${id}/cancel`, undefined),
  deleteJob: (id: string) => request(`/v1/jobs/${id}`, { method: "DELETE" }),
  metrics: (id: string) => getJSON<Page<MetricPoint>>(`/v1/jobs/${id}/metrics`),
  blocks: (id: string) => getJSON<Blocks>(`/v1/jobs/${id}/blocks`),
  events: (id: string) => getJSON<Page<JobEvent>>(`/v1/jobs/${id}/events?limit=100`),
  artifacts: (id: string) => getJSON<Page<Artifact>>(`/v1/jobs/${id}/artifacts`),
  buildMerged: (id: string) => sendJSON<{ status: string }>(`/v1/jobs/${id}/artifacts/merged`, undefined),
  workers: () => getJSON<Page<Worker>>("/v1/workers"),
  usage: () => getJSON<Usage>("/v1/usage"),
  download: (id: string, name: string) => request(`/v1/jobs/${id}/artifacts/${encodeURIComponent(name)}`),
};
