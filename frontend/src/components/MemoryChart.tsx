// Training memory by component for this job, beside what full fine-tuning of the same model would need.
import type { Memory } from "../api";
import { bytes } from "../format";

export interface MemoryColumn { label: string; memory: Memory; measured: boolean; color: string }

/** Runs and estimates share the shape: `weights` are the frozen ones, `trainable` apart; the total is the training
 *  phase's, so SMT's warm-up sums (freed before training) are listed after it. */
export function components(m: Memory, _measured: boolean, warmUp = false): [string, number][] {
  const weights = (m.weights ?? 0) + (m.trainable ?? 0);
  const parts: [string, number][] = [
    ["Weights", weights], ["Gradients", m.gradients ?? 0], ["Optimizer state", m.optimizer ?? 0], ["Activations", m.activations ?? 0],
  ];
  const rows: [string, number][] = [...parts, ["Total", parts.reduce((s, [, v]) => s + v, 0)]];
  return warmUp ? [...rows, ["Warm-up sums (SMT)", m.selection ?? 0]] : rows;
}

export function MemoryChart({ columns }: { columns: MemoryColumn[] }) {
  const warmUp = columns.some((c) => c.memory.selection);
  const rows = columns.map((c) => components(c.memory, c.measured, warmUp));
  const names = rows[0]?.map(([n]) => n) ?? [];
  const max = Math.max(1, ...rows.flat().map(([, v]) => v));
  return (
    <div class="memory">
      <table aria-label="Training memory by component">
        <thead>
          <tr><th scope="col">Component</th>{columns.map((c) => <th scope="col">{c.label}</th>)}</tr>
        </thead>
        <tbody>
          {names.map((n, i) => (
            <tr class={n === "Total" ? "total" : ""} data-component={n}>
              <th scope="row">{n}</th>
              {columns.map((c, j) => (
                <td>
                  <div class="membar"><span style={{ width: `${(rows[j][i][1] / max) * 100}%`, background: c.color }} /></div>
                  <span class="num">{bytes(rows[j][i][1])}</span>
                </td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
      <p class="help">
        Measured figures come from the run (tensors saved for the backward pass, for activations); estimates are
        arithmetic on the model's config for the same batch size and the training rows' lengths.
        {warmUp ? " SMT's warm-up sums the gradients of every targeted matrix before training; they are freed when its blocks are chosen." : ""}
        {columns.some((c) => c.measured && c.memory.peak) ? ` Peak reported by the device: ${bytes(columns.find((c) => c.measured)!.memory.peak)}.` : ""}
      </p>
    </div>
  );
}
