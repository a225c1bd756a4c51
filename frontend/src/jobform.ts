// The new-job form's values (strings, as typed) and the job body they make.
import type { Job, MethodInfo } from "./api";
import { parseBudget, typedOptions } from "./methods";

export interface Hyper {
  epochs: string; steps: string; learning_rate: string; batch_size: string; max_seq_len: string;
  lr_warmup_steps: string; seed: string; num_devices: string;
  // an optimizer step takes this many micro-batches of batch_size rows; evaluations that choose the best adapter
  gradient_accumulation_steps: string; eval_every: string; metric_for_best: string; early_stopping_patience: string;
}

export interface JobForm {
  model: string; trainDs: string; validDs: string; method: string; budgetText: string; targets: string[];
  hp: Hyper; checkpointing: boolean; opts: Record<string, string>; suffix: string;
  initFrom: string;  // the succeeded job this one continues ("" : none)
}

export const INITIAL_FORM: JobForm = {
  // method "": the service's first (GET /v1/methods lists the most wanted first) once the list arrives
  model: "", trainDs: "", validDs: "", method: "", budgetText: "0.01", targets: ["q", "k", "v"],
  hp: { epochs: "1", steps: "", learning_rate: "", batch_size: "8", max_seq_len: "256", lr_warmup_steps: "0", seed: "0", num_devices: "1",
        gradient_accumulation_steps: "1", eval_every: "0", metric_for_best: "", early_stopping_patience: "" },
  checkpointing: false, opts: {}, suffix: "", initFrom: "",
};

/** The form for continuing ``parent`` (its "Continue" button): the same model, method, targets, budget and
 * options, and init_from set; the data and steps are the user's to pick. */
export function continueForm(parent: Job): JobForm {
  const opts: Record<string, string> = {};
  for (const [k, v] of Object.entries(parent.method_options ?? {})) if (v !== null && v !== undefined) opts[`${parent.method}.${k}`] = String(v);
  return {
    ...INITIAL_FORM, model: parent.model, method: parent.method, targets: [...parent.targets],
    budgetText: parent.budget === null ? INITIAL_FORM.budgetText : String(parent.budget), opts, initFrom: parent.id,
    validDs: "", trainDs: "", suffix: parent.suffix ?? "",
  };
}

export type SetForm = (patch: Partial<JobForm>) => void;

/** Why the budget text is no budget, or null (a method without a budget takes any). */
export function budgetError(form: JobForm, spec: MethodInfo | undefined): string | null {
  return spec?.uses_budget !== false && parseBudget(form.budgetText) === null
    ? "Enter a fraction of the model in (0, 1) such as 0.01 or 1%, or a whole number of parameters such as 4096." : null;
}

/** The POST /v1/jobs body: hyperparameters typed, steps instead of epochs when given, options typed by their spec. */
export function jobBody(form: JobForm, spec: MethodInfo | undefined): Record<string, unknown> {
  const { hp } = form;
  const h: Record<string, number | boolean | string> = {
    batch_size: Number(hp.batch_size), max_seq_len: Number(hp.max_seq_len), lr_warmup_steps: Number(hp.lr_warmup_steps),
    num_devices: Number(hp.num_devices) || 1, gradient_checkpointing: form.checkpointing,
    gradient_accumulation_steps: Number(hp.gradient_accumulation_steps) || 1, eval_every: Number(hp.eval_every) || 0,
  };
  if (hp.metric_for_best) h.metric_for_best = hp.metric_for_best;
  if (hp.early_stopping_patience.trim()) h.early_stopping_patience = Number(hp.early_stopping_patience);
  if (hp.steps.trim()) h.steps = Number(hp.steps);
  else if (hp.epochs.trim()) h.epochs = Number(hp.epochs);
  if (hp.learning_rate.trim()) h.learning_rate = Number(hp.learning_rate);
  return {
    model: form.model, training_dataset: form.trainDs, validation_dataset: form.validDs || null, method: form.method,
    budget: spec?.uses_budget === false ? null : parseBudget(form.budgetText), targets: form.targets,
    hyperparameters: h, method_options: typedOptions(spec, form.opts), seed: Number(hp.seed) || 0,
    suffix: form.suffix.trim() || null, init_from: form.initFrom || null,
  };
}
