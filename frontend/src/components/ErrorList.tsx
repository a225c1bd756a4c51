// An API error in words, with the per-line problems of a dataset upload listed under it, or the field it names.
import type { ApiError, LineError } from "../api";

export function ErrorList({ error }: { error: ApiError }) {
  const lines: LineError[] = error.details ?? [];
  return (
    <div class="error" role="alert">
      <p>{error.message}</p>
      {lines.length > 0 && (
        <ul class="line-errors" aria-label="Problems by line">
          {lines.map((d) => (
            <li>{d.line !== undefined ? `Line ${d.line}` : "File"}{d.field ? `, field “${d.field}”` : ""}: {d.message}</li>
          ))}
          {error.total !== null && error.total > lines.length && <li>…and {error.total - lines.length} more</li>}
        </ul>
      )}
    </div>
  );
}

/** An API error as the API sent it: its message, the field (`param`) it names, and when to retry (Retry-After). */
export function ApiErrorBox({ error, what }: { error: ApiError; what?: string }) {
  const http = error.status && !error.message.includes("HTTP") ? ` (HTTP ${error.status})` : "";
  return (
    <div class="error" role="alert" data-http-status={error.status} data-param={error.param ?? ""}>
      <p>{what ? `${what}: ` : ""}{error.message}{http}</p>
      {error.param && <p class="error-field">Field: <code>{error.param}</code></p>}
      {error.retryAfter !== null && error.retryAfter !== undefined && (
        <p class="error-retry">The service asks to try again in {error.retryAfter} s.</p>
      )}
    </div>
  );
}
