// The chosen method's options, built from GET /v1/methods: a choice for booleans and enums, a field for numbers,
// each with its default (or "the method's default") and the service's own help text.
import type { MethodInfo, MethodOption } from "../api";
import type { JobForm, SetForm } from "../jobform";
import { methodLabel, optionLabel, optionPlaceholder } from "../methods";

function OptionField({ method, opt, value, onChange }: {
  method: string; opt: MethodOption; value: string; onChange: (e: Event) => void;
}) {
  const id = `opt-${method}-${opt.name}`;
  const choices = opt.enum ? opt.enum.map(String) : opt.type === "boolean" ? ["true", "false"] : null;
  return (
    <div class="field">
      <label for={id}>{optionLabel(opt.name)}</label>
      {choices ? (
        <select id={id} value={value} onChange={onChange} aria-describedby={`${id}-help`}>
          <option value="">default ({optionPlaceholder(opt)})</option>
          {choices.map((v) => <option value={v}>{v}</option>)}
        </select>
      ) : (
        <input id={id} inputMode={opt.type === "integer" ? "numeric" : "decimal"} value={value}
               placeholder={optionPlaceholder(opt)} onInput={onChange} aria-describedby={`${id}-help`} />
      )}
      <p id={`${id}-help`} class="help">{opt.help}</p>
    </div>
  );
}

export function OptionFields({ form, set, spec }: { form: JobForm; set: SetForm; spec: MethodInfo | undefined }) {
  if (!spec || spec.options.length === 0) return null;
  return (
    <fieldset>
      <legend>{methodLabel(spec.id)[0]} options</legend>
      <div class="grid">
        {spec.options.map((opt) => {
          const k = `${spec.id}.${opt.name}`;
          return <OptionField key={k} method={spec.id} opt={opt} value={form.opts[k] ?? ""}
                              onChange={(e) => set({ opts: { ...form.opts, [k]: (e.target as HTMLInputElement).value } })} />;
        })}
      </div>
    </fieldset>
  );
}
