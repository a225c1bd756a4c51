// The public REST API (../shared/INTERFACE.md), typed, with its one error shape turned into words.
// The types are the API's own: generated from its OpenAPI document into generated/openapi.ts by
// scripts/gen_api_types.sh (tests/test_api_types.py fails when that file is stale). Written here by hand only
// where the document has no schema for a shape:
//   - Memory: `memory` of a job, a metric point and an estimate is a free-form object in the document;
//   - JobEvent.data: each event type carries its own fields (the document says only "an object"); the SSE
//     stream GET /v1/events has no schema and carries the same events;
//   - LineError: the error object's `details` items are free-form objects.
import type { components } from "./generated/openapi";

type Schemas = components["schemas"];

export type Status = Schemas["JobStatus"];
const STATUS_SET: Record<Status, true> = { queued: true, running: true, succeeded: true, failed: true, cancelled: true };
export const STATUSES = Object.keys(STATUS_SET) as Status[];  // a status added to the enum fails the typecheck here

/** Every list's envelope (the document's ListPage_*), over the element type the dashboard reads. */
export type Page<T> = Omit<Schemas["ListPage_JobPublic_"], "data"> & { data: T[] };
export interface Memory {
  weights?: number; trainable?: number; gradients?: number; optimizer?: number; activations?: number; peak?: number;
  selection?: number;  // a selection warm-up (SMT's gradient sums of every targeted matrix, freed before training)
}
export type Job = Omit<Schemas["JobPublic"], "memory"> & { memory: Memory | null };
export type Worker = Schemas["WorkerPublic"];
export type Dataset = Schemas["DatasetPublic"];
export type Model = Schemas["ModelPublic"];
/** One option of a method as GET /v1/methods lists it (default null: the method computes it; see help). */
export type MethodOption = Schemas["MethodOptionPublic"];
export type MethodInfo = Schemas["MethodPublic"];
export type Estimate = Omit<Schemas["EstimatePublic"], "memory"> & { memory: Memory };
export type MetricPoint = Omit<Schemas["MetricPointPublic"], "memory"> & { memory: Memory | null };
export type Artifact = Schemas["ArtifactPublic"];
export type Usage = Schemas["UsagePublic"];
export type JobEvent = Omit<Schemas["EventPublic"], "data"> & { data: Record<string, any> };
export type Block = Schemas["BlockPublic"];
export type BlockModule = Schemas["BlockModulePublic"];
export type Blocks = Schemas["BlocksPublic"];
export interface LineError { line?: number; field?: string | null; message: string }

/** An API error in words: the server's message, the parameter it names and per-line details; `retryAfter`
 * the seconds a 503 (or 429) asks the client to wait, from its Retry-After header. */
export class ApiError extends Error {
  retryAfter: number | null = null;
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
  const err = await errorBody(res);
  const wait = Number(res.headers.get("Retry-After"));
  if (res.headers.has("Retry-After") && Number.isFinite(wait)) err.retryAfter = wait;
  return err;
}

async function errorBody(res: Response): Promise<ApiError> {
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
  } catch (e) {
    if (init.signal?.aborted) throw e;  // stopped by the caller (an AbortError), not a network failure
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
  dataset: (id: string) => getJSON<Dataset>(`/v1/datasets/${encodeURIComponent(id)}`),
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
  buildMerged: (id: string) => sendJSON<Schemas["ArtifactRequest"]>(`/v1/jobs/${id}/artifacts/merged`, undefined),
  workers: () => getJSON<Page<Worker>>("/v1/workers"),
  usage: () => getJSON<Usage>("/v1/usage"),
  download: (id: string, name: string) => request(`/v1/jobs/${id}/artifacts/${encodeURIComponent(name)}`),
};
