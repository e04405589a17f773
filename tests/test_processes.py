"""The process set-up every `conductor` command runs before it serves."""

from __future__ import annotations

import json
import subprocess
import sys

# Run in a child: freezing the collector's view of this pytest process would outlive the test.
TUNED_PROCESS = """
import gc, json, weakref
from app.processes import YOUNG_GC_THRESHOLD, tune_gc

tune_gc()
frozen = gc.get_freeze_count()
threshold = gc.get_threshold()[0]

class Node:
    pass

freed = 0
def count(_):
    global freed
    freed += 1

refs = []
for _ in range(3 * YOUNG_GC_THRESHOLD):  # cycles that refcounting alone never frees
    a, b = Node(), Node()
    a.other, b.other = b, a
    refs.append(weakref.ref(a, count))
    del a, b
print(json.dumps({"frozen": frozen, "threshold": threshold, "freed": freed,
                  "made": len(refs)}))
"""


def test_start_up_objects_are_frozen_and_cyclic_garbage_is_still_collected() -> None:
    done = subprocess.run([sys.executable, "-c", TUNED_PROCESS], capture_output=True,
                          text=True, check=True, timeout=60)
    seen = json.loads(done.stdout)
    # What the imports made is out of every later collection...
    assert seen["frozen"] > 1000
    assert seen["threshold"] == 10_000
    # ...and garbage that really piles up is collected without anyone calling gc.collect().
    assert seen["freed"] >= seen["made"] // 2
