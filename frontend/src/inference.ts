// Trying a fine-tuned model through the public inference routes (../shared/INTERFACE.md, "Inference"):
// POST /v1/completions and /v1/chat/completions in OpenAI's shapes, streamed as SSE chunks ending
// `data: [DONE]`, and POST /v1/jobs/{id}/predict for classification jobs. The chunks have no schema in the
// OpenAPI document (a stream), so their few fields the playground reads are typed here by hand; usage and
// predictions are the document's own types.
import { ApiError, request, sendJSON, type Job, type Page } from "./api";
import type { components } from "./generated/openapi";
import { readSse } from "./sse";

export type Role = "system" | "user" | "assistant";
export interface Message { role: Role; content: string }
export type TokenUsage = components["schemas"]["TokenUsage"];
export interface Sampling { temperature: number; max_tokens: number; seed: number | null }
/** One streamed piece: text (a chat chunk's delta.content or a completion chunk's text), the finish reason on the
 * last chunk of a choice, and usage on the final chunk (stream_options.include_usage). */
export interface Piece { text: string; finish_reason: string | null; usage: TokenUsage | null }

export type Prediction = components["schemas"]["Prediction"];

/** A job's training dataset format → how it is tried: classification jobs predict, the others generate. */
export type Task = "classification" | "causal_lm";
export const taskOf = (format: string | null | undefined): Task | null =>
  !format ? null : format === "classification" ? "classification" : "causal_lm";

/** The job's fine-tuned model name (INTERFACE.md: set when the job succeeded), null before the API names it. */
export const fineTunedModel = (j: Job): string | null => (j as Job & { fine_tuned_model?: string | null }).fine_tuned_model ?? null;

/** Stream one answer: `prompt` to /v1/completions, or `messages` to /v1/chat/completions. Throws ApiError
 * (the API's message and field) on an error response or an error chunk; ends quietly when `signal` aborts. */
export async function* streamAnswer(model: string, input: { prompt: string } | { messages: Message[] }, sampling: Sampling,
                                    signal: AbortSignal): AsyncGenerator<Piece> {
  const chat = "messages" in input;
  const body: Record<string, unknown> = {
    model, ...input, stream: true, stream_options: { include_usage: true },
    temperature: sampling.temperature, max_tokens: sampling.max_tokens,
  };
  if (sampling.seed !== null) body.seed = sampling.seed;
  let res: Response;
  try {
    res = await request(chat ? "/v1/chat/completions" : "/v1/completions", {
      method: "POST", body: JSON.stringify(body), signal,
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    });
  } catch (e) {
    if (signal.aborted) return;
    throw e;
  }
  if (!res.body) throw new ApiError(res.status, "the service answered without a body");
  let done = false;
  try {
    for await (const ev of readSse(res.body, signal)) {
      if (ev.data === "[DONE]") { done = true; break; }
      let chunk: any;
      try { chunk = JSON.parse(ev.data); } catch { continue; }
      if (chunk?.error) {  // an error after the stream began: the same error object as a response's
        const err = chunk.error;
        throw new ApiError(typeof err.status === "number" ? err.status : 0, err.message ?? String(err), err.param ?? null);
      }
      const choice = chunk?.choices?.[0];
      const text = (chat ? choice?.delta?.content : choice?.text) ?? "";
      yield { text: typeof text === "string" ? text : "", finish_reason: choice?.finish_reason ?? null, usage: chunk?.usage ?? null };
    }
  } catch (e) {
    if (signal.aborted) return;
    if (e instanceof ApiError) throw e;
    throw new ApiError(0, "the connection dropped while the answer streamed");
  }
  if (!done && !signal.aborted) throw new ApiError(0, "the answer stream ended before data: [DONE] (the connection dropped)");
}

export async function predict(jobId: string, texts: string[]): Promise<Prediction[]> {
  return (await sendJSON<Page<Prediction>>(`/v1/jobs/${jobId}/predict`, { texts })).data;
}
