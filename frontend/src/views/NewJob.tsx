// New job: model, dataset (upload or pick; errors shown by line), method, budget, what every method would
// train and need in memory for this model (before launch), hyperparameters with defaults, method options.
// The methods and their options are the service's own (GET /v1/methods).
import { useEffect, useRef, useState } from "preact/hooks";
import { api, ApiError } from "../api";
import { DataFields } from "../components/DataFields";
import { ErrorList } from "../components/ErrorList";
import { HyperparameterFields } from "../components/HyperparameterFields";
import { MethodFields } from "../components/MethodFields";
import { OptionFields } from "../components/OptionFields";
import { useEstimates } from "../estimates";
import { newId } from "../format";
import { useLoad } from "../hooks";
import { budgetError, continueForm, INITIAL_FORM, jobBody, type JobForm } from "../jobform";
import { parseBudget, typedOptions, useMethods } from "../methods";

export function NewJobView({ from }: { from?: string | null } = {}) {
  const models = useLoad(() => api.models(), []);
  const datasets = useLoad(() => api.datasets(), []);
  const methodList = useMethods();
  const [form, setForm] = useState<JobForm>(INITIAL_FORM);
  const [submitError, setSubmitError] = useState<ApiError | null>(null);
  const [submitting, setSubmitting] = useState(false);
  const idem = useRef(newId());
  const set = (patch: Partial<JobForm>) => setForm((f) => ({ ...f, ...patch }));
  const parent = useLoad(async () => (from ? api.job(from) : null), [from]);
  // "Continue" on a finished job: its model, method, targets, budget and options, with init_from set
  useEffect(() => {
    const p = parent.data;
    if (p) setForm((f) => ({ ...continueForm(p), trainDs: f.trainDs }));
  }, [parent.data?.id]);

  const modelList = (models.data?.data ?? []).filter((m) => m.job == null); // base models only: fine-tuned ones are for inference
  const dsList = datasets.data?.data ?? [];
  const methods = methodList.data ?? [];
  const current = modelList.find((m) => m.id === form.model);
  const spec = methods.find((m) => m.id === form.method);
  // defaults once the lists arrive, never over a choice made meanwhile
  useEffect(() => { if (modelList.length) setForm((f) => ({ ...f, model: f.model || modelList[0].id })); }, [modelList.length]);
  useEffect(() => { if (dsList.length) setForm((f) => ({ ...f, trainDs: f.trainDs || dsList[0].id })); }, [dsList.length]);
  useEffect(() => {  // the service's first method, or its first instead of one it does not offer
    if (methods.length) setForm((f) => (methods.some((m) => m.id === f.method) ? f : { ...f, method: methods[0].id }));
  }, [methods.length]);
  useEffect(() => {  // keep only targets the model has
    if (current) setForm((f) => {
      const kept = f.targets.filter((x) => current.targets.includes(x));
      return { ...f, targets: kept.length ? kept : current.targets.slice(0, 1) };
    });
  }, [current?.id]);

  const badBudget = budgetError(form, spec);
  const { estimates, errors } = useEstimates(methods, {
    model: form.model, budget: parseBudget(form.budgetText), targets: form.targets, batchSize: form.hp.batch_size,
    maxSeqLen: form.hp.max_seq_len, dataset: form.trainDs, checkpointing: form.checkpointing, method: form.method,
    options: typedOptions(spec, form.opts), accumulation: form.hp.gradient_accumulation_steps,
  });

  const submit = async (e: Event) => {
    e.preventDefault();
    setSubmitError(null);
    if (!form.trainDs) { setSubmitError(new ApiError(0, "Choose a training dataset, or upload one first.", "training_dataset")); return; }
    if (badBudget) { setSubmitError(new ApiError(0, `Budget: ${badBudget}`, "budget")); return; }
    if (!form.targets.length) { setSubmitError(new ApiError(0, "Choose at least one target projection.", "targets")); return; }
    setSubmitting(true);
    try {
      const job = await api.createJob(jobBody(form, spec), idem.current);
      location.hash = `#/jobs/${job.id}`;
    } catch (err) {
      setSubmitError(err as ApiError);
      idem.current = newId();  // a corrected request is a new request
    } finally {
      setSubmitting(false);
    }
  };

  if (models.error) return <p class="error" role="alert">Could not load the models: {models.error}</p>;
  if (methodList.error) return <p class="error" role="alert">Could not load the methods: {methodList.error}</p>;
  if (models.data && modelList.length === 0)
    return <div class="empty"><h1>New job</h1><p>This service allows no models. Set <code>SPARSETUNE_MODELS</code> (alias → folder) and restart <code>sparsetune up</code>.</p></div>;

  return (
    <section aria-labelledby="new-title">
      <h1 id="new-title">New job</h1>
      {parent.error && <p class="error" role="alert">Could not load job {from}: {parent.error}</p>}
      {form.initFrom && (
        <p class="note" data-init-from={form.initFrom}>
          Continues job <a href={`#/jobs/${form.initFrom}`}><code>{form.initFrom}</code></a>: it starts from that job's
          adapter, so its model, method, targets and budget stay the same; pick the data and steps. The optimizer and
          the learning-rate schedule start afresh.{" "}
          <button type="button" class="link" onClick={() => set({ initFrom: "" })}>Start from the base model instead</button>
        </p>
      )}
      <form onSubmit={submit} class="newjob" noValidate>
        <DataFields form={form} set={set} models={modelList} datasets={dsList} reloadDatasets={datasets.reload} />
        <MethodFields form={form} set={set} methods={methods} budgetError={badBudget}
                      modelTargets={current?.targets ?? ["q", "k", "v"]} estimates={estimates} errors={errors} />
        <HyperparameterFields form={form} set={set} />
        <OptionFields form={form} set={set} spec={spec} />
        {submitError && <ErrorList error={submitError} />}
        <div class="actions">
          <button type="submit" disabled={submitting}>{submitting ? "Launching…" : "Launch job"}</button>
          <a href="#/jobs">Cancel</a>
        </div>
      </form>
    </section>
  );
}
