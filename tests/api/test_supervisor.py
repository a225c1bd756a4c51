"""The supervisor `sparsetune up` runs its processes under: a death is reaped, its group killed, its hook
run, and the process started again after a delay that doubles per short life up to the cap, then resets."""

from __future__ import annotations

import subprocess
import sys
import time

from cli.supervisor import Supervisor
from service.workdirs import alive
from tests.api.fixtures import wait_for

# a leader that starts a grandchild in its group (like the worker's training child), prints its pid, and
# exits after argv[1] seconds
SCRIPT = ("import subprocess, sys, time; c = subprocess.Popen(['sleep', '60']); print(c.pid, flush=True); "
          "time.sleep(float(sys.argv[1]))")


def test_a_dead_process_is_reaped_its_group_killed_and_restarted_with_capped_backoff():
    life = {"seconds": 0.0}
    grandchildren: list[int] = []
    exits: list[int] = []

    def start() -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(life["seconds"])], stdout=subprocess.PIPE,
                                text=True, start_new_session=True)
        grandchildren.append(int(proc.stdout.readline()))
        return proc

    sup = Supervisor(backoff=0.2, backoff_max=0.8, poll=3600)  # the test drives check() itself
    child = sup.add("demo", start, lambda pid, started: exits.append(pid))
    sup.start()
    try:
        for expected in (0.2, 0.4, 0.8, 0.8):  # short lives: doubled, then capped
            pid = child.proc.pid
            child.proc.wait()
            sup.check(child)
            assert child.proc is None and child.delay == expected and exits[-1] == pid
            wait_for(lambda: not alive(grandchildren[-1]), 5, 0.01, "the group to go with its leader")
            sup.check(child)
            assert child.proc is None  # not before its delay
            time.sleep(expected)
            sup.check(child)
            assert child.proc is not None and child.proc.pid != pid
        life["seconds"] = 1.0  # the next life outlasts the cap: the delay after it starts over
        child.proc.wait()
        sup.check(child)
        assert child.delay == 0.8
        child.restart_at = 0  # (no need to wait the delay out)
        sup.check(child)
        child.proc.wait()
        sup.check(child)
        assert child.delay == 0.2
    finally:
        sup.stop(grace=5)
    wait_for(lambda: not any(alive(p) for p in grandchildren), 5, 0.01, "nothing left running")
