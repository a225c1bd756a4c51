// The new job's hyperparameters, each with the service's default already filled in or named.
import type { Hyper, JobForm, SetForm } from "../jobform";

const FIELDS: [keyof Hyper, string, string, "numeric" | "decimal"][] = [  // key, id, label, input mode
  ["epochs", "hp-epochs", "Epochs", "decimal"], ["steps", "hp-steps", "Steps (instead of epochs)", "numeric"],
  ["learning_rate", "hp-lr", "Learning rate", "decimal"], ["batch_size", "hp-batch", "Batch size", "numeric"],
  ["max_seq_len", "hp-seq", "Max sequence length", "numeric"], ["lr_warmup_steps", "hp-warmup", "Warm-up steps", "numeric"],
  ["num_devices", "hp-devices", "Devices (data parallel)", "numeric"],
  ["gradient_accumulation_steps", "hp-accum", "Gradient accumulation steps", "numeric"],
  ["eval_every", "hp-eval-every", "Evaluate every (steps, 0: at the end)", "numeric"],
  ["early_stopping_patience", "hp-patience", "Early stopping patience (evaluations)", "numeric"],
];
const PLACEHOLDERS: Partial<Record<keyof Hyper, string>> = {
  steps: "from epochs", learning_rate: "the method's default", early_stopping_patience: "off",
};

export function HyperparameterFields({ form, set }: { form: JobForm; set: SetForm }) {
  const setH = (k: keyof Hyper) => (e: Event) => set({ hp: { ...form.hp, [k]: (e.target as HTMLInputElement).value } });
  return (
    <fieldset>
      <legend>Hyperparameters</legend>
      <div class="grid">
        {FIELDS.map(([k, id, label, mode]) => (
          <div class="field" key={id}><label for={id}>{label}</label>
            <input id={id} inputMode={mode} value={form.hp[k]} placeholder={PLACEHOLDERS[k]} onInput={setH(k)}
                   disabled={k === "epochs" && !!form.hp.steps.trim()} /></div>
        ))}
        <div class="field"><label for="hp-best">Keep the best adapter by</label>
          <select id="hp-best" value={form.hp.metric_for_best} onChange={setH("metric_for_best")}>
            <option value="">— (the last one)</option>
            <option value="eval_loss">eval_loss (lowest)</option>
            <option value="eval_accuracy">eval_accuracy (highest)</option>
          </select>
          <p class="help">Serves and merges the best evaluation's adapter; early stopping needs it and "evaluate every".</p></div>
        <div class="field"><label for="hp-ckpt">
          <input id="hp-ckpt" type="checkbox" checked={form.checkpointing}
            onChange={(e) => set({ checkpointing: (e.target as HTMLInputElement).checked })} /> Gradient checkpointing</label>
          <p class="help">Less activation memory for some extra compute.</p></div>
        <div class="field"><label for="hp-seed">Seed</label>
          <input id="hp-seed" inputMode="numeric" value={form.hp.seed} onInput={setH("seed")} /></div>
        <div class="field"><label for="suffix">Name suffix</label>
          <input id="suffix" value={form.suffix} placeholder="optional" maxLength={64}
                 onInput={(e) => set({ suffix: (e.target as HTMLInputElement).value })} /></div>
      </div>
    </fieldset>
  );
}
