// An API error in words, with the per-line problems of a dataset upload listed under it.
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
