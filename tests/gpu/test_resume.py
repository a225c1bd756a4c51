"""Train → interrupt → resume → finish equals an uninterrupted run, for every method and architecture.

Deterministic kernels (conftest) make the two runs compute the same operations in the same order, so the
adapters agree to fp32 rounding; a difference points at state a checkpoint does not carry (a tensor left on
the wrong device, an RNG not restored, a dtype changed on reload).
"""

from __future__ import annotations

import pytest
import torch

from smt_core import Callbacks, Cancelled, run
from smt_core.artifacts import load_adapter
from tests.gpu import helpers

pytestmark = helpers.needs_device
CASES = helpers.cases()


@pytest.mark.parametrize(("method", "arch"), CASES)
def test_interrupted_run_resumes_to_the_uninterrupted_result(device, method, arch, trained, model_dir, data_file,
                                                             tmp_path):
    straight, straight_out = trained(device, method, arch)
    out = tmp_path / "out"
    done: list[int] = []
    cb = Callbacks().add("on_step_end", lambda p: done.append(p["step"]))
    cb.add_stop_check(lambda: len(done) >= 3)  # stop after step 3: the last checkpoint is step 2
    with pytest.raises(Cancelled):
        run(helpers.spec_for(device, method, model_dir(arch), data_file(arch), out), cb)

    steps: list[int] = []
    logs: list[str] = []
    cb = Callbacks().add("on_step_end", lambda p: steps.append(p["step"])).add("on_log", lambda p: logs.append(p["message"]))
    resumed = run(helpers.spec_for(device, method, model_dir(arch), data_file(arch), out, resume=True), cb)
    assert steps == list(range(helpers.CHECKPOINT_EVERY + 1, helpers.STEPS + 1))
    assert any(m.startswith(f"resumed from the checkpoint at step {helpers.CHECKPOINT_EVERY}") for m in logs)
    assert resumed.metrics["precision"] == straight.metrics["precision"] == helpers.expected_precision(device)

    a, _ = load_adapter(straight_out)
    b, _ = load_adapter(out)
    assert a.keys() == b.keys()
    for k in a:
        diff = (a[k].double() - b[k].double()).abs().max().item() if a[k].numel() else 0.0
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6,
                                   msg=f"{method}/{arch} on {device}: resumed run differs at {k} (max {diff:.3g})")
