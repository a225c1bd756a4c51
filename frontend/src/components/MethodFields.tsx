// The new job's method (the list GET /v1/methods offers), budget and target projections, with every method's
// estimate for this model before launch.
import type { Estimate, MethodInfo } from "../api";
import type { JobForm, SetForm } from "../jobform";
import { methodLabel } from "../methods";
import { EstimateTable } from "./EstimateTable";

export function MethodFields({ form, set, methods, budgetError, modelTargets, estimates, errors }: {
  form: JobForm; set: SetForm; methods: MethodInfo[]; budgetError: string | null; modelTargets: string[];
  estimates: Record<string, Estimate>; errors: Record<string, string>;
}) {
  const spec = methods.find((m) => m.id === form.method);
  const ownOptions = spec?.options.some((o) => (form.opts[`${form.method}.${o.name}`] ?? "").trim());
  const toggle = (t: string) => (e: Event) =>
    set({ targets: (e.target as HTMLInputElement).checked ? [...form.targets, t] : form.targets.filter((x) => x !== t) });
  return (
    <fieldset>
      <legend>Method and budget</legend>
      <div class="methods" role="radiogroup" aria-label="Method">
        {methods.map(({ id }) => (
          <div class="radio" key={id}>
            <input type="radio" id={`method-${id}`} name="method" value={id} checked={form.method === id}
                   aria-describedby={`method-${id}-help`} onChange={() => set({ method: id })} />
            <label for={`method-${id}`}>{methodLabel(id)[0]}</label>
            <span id={`method-${id}-help`} class="muted">{methodLabel(id)[1]}</span>
          </div>
        ))}
      </div>
      <div class="field">
        <label for="budget">Budget</label>
        <input id="budget" value={form.budgetText} inputMode="decimal" disabled={spec?.uses_budget === false} aria-describedby="budget-help"
               aria-invalid={budgetError ? "true" : undefined} onInput={(e) => set({ budgetText: (e.target as HTMLInputElement).value })} />
        <p id="budget-help" class="help">{budgetError ?? "A fraction of the model's parameters (0.01 or 1%) or a count of trainable parameters (4096). The same budget for every method compares like with like."}</p>
      </div>
      <fieldset class="inline">
        <legend>Target projections</legend>
        {modelTargets.map((t) => (
          <label class="check" key={t}>
            <input type="checkbox" checked={form.targets.includes(t)} onChange={toggle(t)} />
            {t}
          </label>
        ))}
      </fieldset>
      {form.model && <EstimateTable model={form.model} methods={methods} method={form.method} estimates={estimates} errors={errors} />}
      {ownOptions && (
        <p class="help" role="note">The {methodLabel(form.method)[0]} row uses the options set below; the other methods use their defaults.</p>
      )}
    </fieldset>
  );
}
