"""Reliability figures: kill -9 during writes, concurrent writers, with store checks after each.

Run: ``.venv/bin/python benchmarks/reliability.py [--trials 10] [--n 100000]``

Prints kills survived / tried, acknowledged events lost, half batches seen, and concurrent actions
landed / sent. The test suite runs the same functions at small sizes (tests/test_reliability.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curation.store import Store  # noqa: E402
from curation.workspace import Workspace  # noqa: E402

_WRITER = r"""
import sys, json, numpy as np
from curation.store import Store
store = Store(sys.argv[1]); mode = sys.argv[2]; n_classes = len(store.class_names())
ids = store.sample_ids(); rng = np.random.default_rng(int(sys.argv[3]))
print("ready", flush=True)
while True:
    if mode == "bulk":
        b = store.set_label(ids, int(rng.integers(1, n_classes + 1)), source="bulk")
    elif mode == "undo":
        hist = store.batches(limit=20)
        b = store.undo(int(hist.index[rng.integers(len(hist))])) if len(hist) else None
    else:
        sel = rng.choice(ids, 50, replace=False)
        b = store.set_label(sel, int(rng.integers(1, n_classes + 1)), source="human")
    print(json.dumps({"ack": b}), flush=True)
"""


def make_workspace(dest: Path, n: int, *, n_classes: int = 5) -> Workspace:
    """A workspace with n fake samples and every sample labelled (no image files needed for the store)."""
    ws = Workspace.create(dest)
    recs = pd.DataFrame({"path": [f"s{i}.png" for i in range(n)], "sha1": [f"{i:040x}" for i in range(n)],
                         "bytes": 1, "width": 1, "height": 1})
    rng = np.random.default_rng(0)
    names = [f"class{k}" for k in range(n_classes)]
    ws.store.add_samples(ws.store.root_id(dest), recs, labels=[[names[k]] for k in rng.integers(0, n_classes, n)])
    return ws


def kill_trial(db: Path, mode: str, *, seed: int, max_wait: float = 3.0) -> dict:
    """Start a writer process, SIGKILL it at a random moment, then check the store.

    Returns
    -------
    dict with ``ok`` (store check passed), ``acked`` (batches the writer confirmed), ``lost``
    (confirmed batches missing after the kill) and ``half`` (batches whose event count differs).
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(db), mode, str(seed)], stdout=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout is not None
    proc.stdout.readline()  # "ready"
    time.sleep(random.Random(seed).uniform(0.05, max_wait))
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate()
    acked = [json.loads(line)["ack"] for line in out.splitlines() if line.startswith("{")]
    acked = [a for a in acked if a is not None]
    store = Store(db)
    problems = store.check()
    present = set(store.batches(limit=10_000_000).index.tolist())
    lost = [a for a in acked if a not in present]
    store.close()
    return {"ok": not problems, "problems": problems, "acked": len(acked), "lost": len(lost),
            "half": sum("number of events" in p for p in problems)}


def concurrent_trial(db: Path, *, writers: int = 3, actions: int = 1000) -> dict:
    """``writers`` processes each make ``actions`` single-sample label changes at once.

    Each writer owns a disjoint slice of samples and sets each one to a class; afterwards every
    sample must carry exactly the class its writer set (landed), and the store must check clean.
    """
    code = r"""
import sys, json
from curation.store import Store
store = Store(sys.argv[1]); k = int(sys.argv[2]); n = int(sys.argv[3]); w = int(sys.argv[4])
mine = store.sample_ids()[k::w][:n]
cids = store.classes().index.tolist()
want = {}
for i, s in enumerate(mine):
    want[int(s)] = cids[(i + k) % len(cids)]
    store.set_label([int(s)], want[int(s)], source="human", actor=f"writer{k}")
print(json.dumps(want), flush=True)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(db), str(k), str(actions), str(writers)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for k in range(writers)]
    outs = [p.communicate(timeout=600) for p in procs]
    errors = [e for _, e in outs if "locked" in e or "Traceback" in e]
    want: dict[int, int] = {}
    for o, _ in outs:
        if o.strip():
            want.update({int(s): c for s, c in json.loads(o.strip().splitlines()[-1]).items()})
    store = Store(db)
    ids = np.array(sorted(want), np.int64)
    got = store.single_labels(ids)
    cids = np.array(store.classes().index.tolist())
    landed = int((cids[got[got >= 0]] == np.array([want[i] for i in ids])[got >= 0]).sum())
    return {"sent": writers * actions, "landed": landed, "errors": len(errors), "ok": not store.check()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--n", type=int, default=100_000, help="samples in the bulk-relabel workspace")
    ap.add_argument("--actions", type=int, default=1000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = make_workspace(Path(tmp) / "bulk", a.n)
        db = ws.root / "curation.db"
        for mode in ("bulk", "undo", "small"):
            res = [kill_trial(db, mode, seed=s) for s in range(a.trials)]
            print(f"kill -9 during {mode:>5} writes ({a.n:,} samples): survived {sum(r['ok'] for r in res)}/"
                  f"{len(res)}, acknowledged batches {sum(r['acked'] for r in res)}, lost "
                  f"{sum(r['lost'] for r in res)}, half batches {sum(r['half'] for r in res)}")
        ws2 = make_workspace(Path(tmp) / "conc", 3 * a.actions)
        t = time.perf_counter()
        r = concurrent_trial(ws2.root / "curation.db", writers=3, actions=a.actions)
        print(f"concurrent writers: 3 x {a.actions} actions, landed {r['landed']}/{r['sent']}, "
              f"'database is locked' errors {r['errors']}, store ok {r['ok']}, {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
