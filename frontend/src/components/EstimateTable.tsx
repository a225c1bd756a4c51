// Before launch: every method's trainable parameters and estimated training memory for the chosen model.
import type { Estimate, MethodInfo } from "../api";
import { bytes, count, percent } from "../format";
import { methodLabel, referenceMethod } from "../methods";

/** How the activations were sized: by the chosen dataset's longest row, or by max_seq_len. */
function sized(estimates: Record<string, Estimate>): string {
  const e = Object.values(estimates).find((x) => x);
  if (!e?.sequence_length) return "";
  return e.tokens ? `; batches of the dataset's longest row, ${e.sequence_length} tokens` : `; rows of ${e.sequence_length} tokens`;
}

export function EstimateTable({ model, methods, method, estimates, errors }: {
  model: string; methods: MethodInfo[]; method: string; estimates: Record<string, Estimate>; errors: Record<string, string>;
}) {
  const reference = referenceMethod(methods);  // full fine-tuning: what the others save against
  const full = reference ? estimates[reference.id]?.memory.peak : undefined;
  const budgeted = new Set(methods.filter((m) => m.uses_budget).map((m) => m.id));
  // the budget as a count; a method whose smallest unit exceeds it gets a warning
  const over = (e: Estimate): number => {
    if (!budgeted.has(e.method) || e.budget === null) return 0;
    const cap = e.budget >= 1 ? e.budget : Math.floor(e.budget * e.total_params);
    return e.trainable_params > cap ? cap : 0;
  };
  return (
    <table class="estimate" aria-label="Estimated trainable parameters and training memory by method">
      <caption>
        What each method would train on <strong>{model}</strong> and need in memory (estimated before launch{sized(estimates)})
      </caption>
      <thead>
        <tr>
          <th scope="col">Method</th><th scope="col" class="num">Trainable params</th><th scope="col" class="num">Share of model</th>
          <th scope="col" class="num">Weights</th><th scope="col" class="num">Gradients</th>
          <th scope="col" class="num">Optimizer state</th><th scope="col" class="num">Activations</th>
          <th scope="col" class="num" title="SMT's selection warm-up: an fp32 gradient sum of every targeted matrix, freed before training">Warm-up sums</th>
          <th scope="col" class="num">Training memory</th><th scope="col" class="num">vs full</th>
        </tr>
      </thead>
      <tbody>
        {methods.map(({ id: m }) => {
          const e = estimates[m];
          const err = errors[m];
          return (
            <tr class={m === method ? "selected" : ""} data-method={m} aria-current={m === method ? "true" : undefined}>
              <th scope="row">{methodLabel(m)[0]}</th>
              {err ? <td colSpan={9} class="muted">{err}</td> : !e ? <td colSpan={9} class="muted">…</td> : (
                <>
                  <td class={`num${over(e) ? " over" : ""}`} data-trainable={e.trainable_params}
                      title={over(e) ? `More than the budget of ${count(over(e))} parameters: the smallest unit of this method on these targets is larger` : undefined}>
                    {over(e) ? "⚠ " : ""}{count(e.trainable_params)}
                  </td>
                  <td class="num">{percent(e.trainable_params / e.total_params, 3)}</td>
                  <td class="num">{bytes((e.memory.weights ?? 0) + (e.memory.trainable ?? 0))}</td>
                  <td class="num">{bytes(e.memory.gradients)}</td>
                  <td class="num">{bytes(e.memory.optimizer)}</td>
                  <td class="num">{bytes(e.memory.activations)}</td>
                  <td class="num">{e.memory.selection ? bytes(e.memory.selection) : "—"}</td>
                  <td class="num"><strong>{bytes(e.memory.peak)}</strong></td>
                  <td class="num">{full && e.memory.peak ? percent(e.memory.peak / full, 0) : "—"}</td>
                </>
              )}
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}
