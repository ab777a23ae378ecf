"""``storage.removable_lock``: one holder at a time across processes, no file left behind, and a holder
killed with SIGKILL releases it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from radassets.storage import removable_lock

HOLD = """
import sys, time
from radassets.storage import removable_lock
with removable_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_lock_held_by_a_killed_process_is_released_and_the_file_removed(tmp_path):
    path = tmp_path / "series.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        told = threading.Event()
        acquired = threading.Event()

        def wait_for_it():
            with removable_lock(path, on_wait=told.set, poll_s=0.05):
                acquired.set()

        waiter = threading.Thread(target=wait_for_it)
        waiter.start()
        assert told.wait(timeout=60) and not acquired.is_set()
        holder.kill()
        waiter.join(timeout=60)
        assert acquired.is_set()
    finally:
        holder.kill()
        holder.wait()
    assert not path.exists()


def test_many_threads_never_hold_it_at_once_and_leave_no_file(tmp_path):
    path = tmp_path / "item.lock"
    inside, most, rounds = [0], [0], 40
    guard = threading.Lock()

    def work():
        for _ in range(rounds):
            with removable_lock(path, poll_s=0.001):
                with guard:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                time.sleep(0.001)  # a holder that stays a while: an overlap would be seen
                with guard:
                    inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert most[0] == 1 and not path.exists()
