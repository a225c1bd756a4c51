// The webhook routes (../shared/INTERFACE.md "Webhooks"), typed from the API's own OpenAPI document.
import type { components } from "./generated/openapi";
import { getJSON, query, request, sendJSON, type Page } from "./api";

type Schemas = components["schemas"];
export type Webhook = Schemas["WebhookPublic"];
export type WebhookCreated = Schemas["WebhookCreated"];
export type WebhookDelivery = Schemas["WebhookDeliveryPublic"];
export type WebhookEvent = Schemas["WebhookEventType"];

const EVENT_SET: Record<WebhookEvent, string> = {  // an event added to the API fails the typecheck here
  "fine_tuning.job.succeeded": "a job succeeded",
  "fine_tuning.job.failed": "a job failed",
  "fine_tuning.job.cancelled": "a job was cancelled",
  "sparsetune.job.merged": "a job's merged model is ready",
};
export const EVENTS = Object.keys(EVENT_SET) as WebhookEvent[];
export const eventHelp = (e: WebhookEvent) => EVENT_SET[e];

export const webhooksApi = {
  list: () => getJSON<Page<Webhook>>("/v1/webhooks?limit=100"),
  create: (url: string, events: WebhookEvent[]) => sendJSON<WebhookCreated>("/v1/webhooks", { url, events }),
  remove: (id: string) => request(`/v1/webhooks/${encodeURIComponent(id)}`, { method: "DELETE" }),
  enable: (id: string) => sendJSON<Webhook>(`/v1/webhooks/${encodeURIComponent(id)}/enable`, undefined),
  deliveries: (id: string, after: string | null = null) =>
    getJSON<Page<WebhookDelivery>>(`/v1/webhooks/${encodeURIComponent(id)}/deliveries${query({ limit: 50, after })}`),
};
