"""Reliability figures: kill -9 of label writers, the app server and job workers; concurrent writers; bad input.

Run: ``.venv/bin/python benchmarks/reliability.py [--trials 5] [--n 100000] [--actions 1000] [--ingest-trials 2]``

Prints the figures of docs/reliability.md: kills survived / tried (label writers, the Streamlit server, job
workers, the CLI ingest), acknowledged events lost, concurrent actions landed / sent, bad image files handled /
tried, broken manifests handled with a message / tried, and the trust cases: embedding failures, read-only and
full disks (root: bind and tmpfs mounts), hostile text. The tests run the same functions at smaller sizes
(tests/test_reliability.py, tests/test_server_kill.py, tests/test_embed_failures.py, tests/test_readonly.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "tests"))  # the bad-input generators and the app-server helpers live there

from appserver import CHROMIUM, AppServer, chromium, click_undo, errors_shown, pick_batch, wait_idle  # noqa: E402
from badfiles import make_bad_manifests, make_corpus, shown  # noqa: E402

from curation.data.ingest import IngestError, ingest  # noqa: E402
from curation.data.store import Store  # noqa: E402
from curation.data.workspace import Workspace  # noqa: E402
from curation.runtime import jobs, liveness  # noqa: E402

TINY = "openclip:tiny-test:random"

_INGESTER = r"""
import sys
from pathlib import Path
from curation.data.ingest import ingest
from curation.data.workspace import Workspace
ws = Workspace.open(sys.argv[1])
ingest(ws, Path(sys.argv[2]), progress=lambda f, m="": print(f"progress {f:.4f} {m}", flush=True))
print("done", flush=True)
"""

_WRITER = r"""
import sys, json, numpy as np
from curation.data.store import Store
store = Store(sys.argv[1]); mode = sys.argv[2]; n_classes = len(store.class_names())
ids = store.sample_ids(); rng = np.random.default_rng(int(sys.argv[3]))
print("ready", flush=True)
while True:
    if mode == "bulk":
        b = store.set_label(ids, int(rng.integers(1, n_classes + 1)), source="bulk")
    elif mode == "undo":  # undo the newest batch (redo, when it is an undo): never refused, often 100k cells
        b = store.undo(int(store.batches(limit=1).index[0]))
    else:
        sel = rng.choice(ids, 50, replace=False)
        b = store.set_label(sel, int(rng.integers(1, n_classes + 1)), source="human")
    n = int(store.batches(limit=1).loc[b, "n_events"]) if b is not None else 0
    print(json.dumps({"ack": b, "events": n}), flush=True)
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


def image_workspace(dest: Path, n: int, *, size: int = 32, n_classes: int = 3) -> Workspace:
    """A workspace of ``n`` random-noise PNGs in ``n_classes`` class folders (under ``dest/images``), ingested."""
    rng = np.random.default_rng(0)
    from PIL import Image

    for i in range(n):
        folder = dest / "images" / f"class{i % n_classes}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    ws = Workspace.create(dest / "ws")
    ingest(ws, dest / "images")
    return ws


def kill_trial(db: Path, mode: str, *, seed: int, max_wait: float = 3.0, min_acks: int = 1) -> dict:
    """Start a writer process, let it acknowledge ``min_acks`` batches, SIGKILL it at a random moment after
    that (while it keeps writing), then check the store.

    Returns
    -------
    dict with ``ok`` (store check passed), ``acked`` (batches the writer confirmed), ``acked_before_kill``
    (confirmations read before the kill was sent: at least ``min_acks``, so the trial always has something
    to lose), ``alive_at_kill`` (the writer was still writing: the kill landed mid-work), ``acked_events``
    (their events), ``lost`` and ``lost_events`` (confirmed batches, and their events, missing or incomplete
    after the kill) and ``half`` (batches whose event count differs from the one recorded).
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(db), mode, str(seed)], stdout=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout is not None
    proc.stdout.readline()  # "ready"
    early = []
    while len(early) < min_acks:  # the writer prints one line per committed batch
        line = proc.stdout.readline()
        if not line:
            break
        early.append(line)
    time.sleep(random.Random(seed).uniform(0.0, max_wait))
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate()
    records = [json.loads(line) for line in [*early, *out.splitlines()] if line.startswith("{")]
    acked = {r["ack"]: r["events"] for r in records if r["ack"] is not None}
    store = Store(db)
    problems = store.check()
    events = store.events(after_event=0)
    have = events[events["batch_id"].isin(list(acked))].groupby("batch_id").size().to_dict()
    lost = {b: n for b, n in acked.items() if have.get(b, 0) != n}
    store.close()
    return {"ok": not problems, "problems": problems, "acked": len(acked), "acked_events": sum(acked.values()),
            "acked_before_kill": sum(line.startswith("{") for line in early), "alive_at_kill": alive,
            "lost": len(lost), "lost_events": sum(lost.values()),
            "half": sum("number of events" in p for p in problems)}


def concurrent_trial(db: Path, *, writers: int = 3, actions: int = 1000) -> dict:
    """``writers`` processes each make ``actions`` single-sample label changes at once.

    Each writer owns a disjoint slice of samples and sets each one to a class; afterwards every
    sample must carry exactly the class its writer set (landed), and the store must check clean.
    """
    code = r"""
import sys, json
from curation.data.store import Store
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


def _sample_count(db: Path) -> int:
    con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        return int(con.execute("SELECT count(*) FROM samples").fetchone()[0])
    finally:
        con.close()


def ingest_kill(dest: Path, *, n: int = 1200, at: str = "checking", timeout: float = 300.0) -> dict:
    """Ingest ``n`` images in a process that reports its progress, SIGKILL it ``at`` a known point, then ingest
    again with the CLI.

    ``at``: ``"checking"`` (the ingest reports progress below 50%: images are being decoded, nothing is
    written yet) or ``"writing"`` (its one write transaction is open: another
    connection sees the write lock held; polled every 2 ms, so a very short transaction can be missed, which
    the result says with ``seen``). The process is frozen (SIGSTOP) once the point is seen, its state
    recorded, then killed, so the kill provably lands mid-ingest.

    Returns
    -------
    dict with ``alive_at_kill``, ``seen`` (the point was reached), ``samples_at_kill`` and ``samples_after``
    (rows in the store; all or nothing), ``labels_with_samples`` (every sample carries its imported label),
    ``check`` (store problems after the kill), ``reingested`` (a second ingest ends with exactly ``n``
    samples, each labelled once, and a clean store).
    """
    if at not in ("checking", "writing"):
        raise ValueError(f"at must be 'checking' or 'writing', not {at!r}")
    rng = np.random.default_rng(0)
    from PIL import Image

    folder = dest / "imgs"
    for i in range(n):
        (folder / f"class{i % 3}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(folder / f"class{i % 3}" / f"{i}.png")
    ws_dir = dest / "ws"
    Workspace.create(ws_dir).store.close()
    db = ws_dir / "curation.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _INGESTER, str(ws_dir), str(folder)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    seen, end = False, time.monotonic() + timeout
    while time.monotonic() < end and not seen:  # progress lines: "progress FRACTION MESSAGE"
        line = proc.stdout.readline()
        if not line:
            break
        parts = line.split()
        seen = len(parts) > 1 and parts[0] == "progress" and 0.0 < float(parts[1]) < 0.5  # checking images
    import threading

    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # keep the pipe drained
    if at == "writing":
        seen = False
        while time.monotonic() < end and proc.poll() is None and not seen:
            try:
                seen = write_locked(db)
            except sqlite3.OperationalError:
                pass
            if not seen:
                time.sleep(0.002)
    alive = proc.poll() is None
    if alive:
        os.kill(proc.pid, signal.SIGSTOP)  # frozen: nothing more is written between the look and the kill
    at_kill = _sample_count(db)
    proc.kill()
    proc.wait()
    store = Store(db)
    problems = store.check()
    after = len(store.sample_ids())
    labelled = bool((store.label_matrix() == 1).any(1).all()) if after else True
    subprocess.run([sys.executable, "-m", "curation", "ingest", str(ws_dir), str(folder)], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    ids = store.sample_ids()
    again = bool(len(ids) == n and store.check() == [] and int((store.label_matrix(ids) == 1).sum()) == n)
    store.close()
    return {"alive_at_kill": alive, "seen": seen, "samples_at_kill": at_kill, "samples_after": after,
            "labels_with_samples": labelled, "check": problems, "reingested": again,
            "ok": alive and seen and after in (0, n) and labelled and not problems and again}


# ---------------------------------------------------------------------- the app server
def write_locked(db: Path) -> bool:
    """Whether another connection holds the store's write lock right now (a write transaction is open)."""
    con = sqlite3.connect(str(db), timeout=0, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        con.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return True
        raise
    finally:
        con.close()


def server_kill_trial(server: AppServer, browser: Any, db: Path, *, delay: float, batch: int | None = None,
                      timeout: float = 120.0) -> dict:
    """Undo a batch from the History page of the running app, SIGKILL the server's process group while it
    writes, restart it, and check the store and that the app serves again.

    Parameters
    ----------
    server : the running app (it is running again, on a new port, when this returns).
    browser : a Playwright browser.
    db : the workspace's ``curation.db``.
    delay : seconds to wait after the write transaction is seen open before the kill (0: at once, so the
        kill lands mid-transaction; larger: it may land after the commit).
    batch : the batch to undo (default: the newest, which the page selects first).

    Returns
    -------
    dict with ``ok`` (store check clean, nothing acknowledged lost, the undo is wholly present or wholly
    absent, the restarted app shows the History page without errors), ``locked`` (the kill came while
    the write lock was held, as far as seen), ``committed`` (the undo survived), ``acked_events`` (events
    written before the click), ``lost`` and ``lost_events`` (of those, missing after), ``half``, ``problems``.
    """
    store = Store(db)
    hist = store.batches(limit=10_000_000)
    before, batch = set(hist.index.tolist()), int(batch if batch is not None else hist.index.max())
    last_event = store.last_event_id()
    acked_events = len(store.events(upto_event=last_event))
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.goto(f"{server.url}/History")
    button = page.get_by_role("button", name=f"Undo batch {int(hist.index.max())}", exact=True)
    button.wait_for(timeout=timeout * 1000)
    wait_idle(page)
    if batch != int(hist.index.max()):
        pick_batch(page, store, batch)
    click_undo(page, batch)
    end, locked = time.monotonic() + timeout, False
    while time.monotonic() < end and not locked:
        locked = write_locked(db)
        time.sleep(0.005)
    time.sleep(delay)
    server.kill()
    page.close()
    problems = store.check()
    after = store.batches(limit=10_000_000)
    new = after[~after.index.isin(list(before))]
    lost = len(before - set(after.index.tolist()))
    lost_events = acked_events - len(store.events(upto_event=last_event))
    server.start()
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.goto(f"{server.url}/History")
    page.get_by_role("button", name="Undo batch").first.wait_for(timeout=timeout * 1000)
    wait_idle(page)
    serves = errors_shown(page) == []
    page.close()
    whole = len(new) == 0 or (len(new) == 1 and int(new["undoes"].iloc[0]) == batch)
    store.close()
    return {"ok": not problems and not lost and not lost_events and whole and serves, "locked": locked,
            "committed": len(new) == 1, "acked_events": acked_events, "lost": lost, "lost_events": lost_events,
            "half": sum("number of events" in p for p in problems), "problems": problems}


# ---------------------------------------------------------------------- job workers
def worker_kill_trial(ws: Workspace, kind: str, params: dict, *, ready: Callable[[Workspace], bool],
                      timeout: float = 300.0) -> dict:
    """Submit a job, SIGKILL its worker once ``ready(ws)`` says it is mid-way, then refresh and resume it.

    Returns
    -------
    dict with ``interrupted`` (the job shows so after ``jobs.refresh``), ``runs_left_running`` (runs the dead
    worker left "running"), ``resumed`` (the resumed job ended "done"), ``job`` and ``resumed_job`` ids.
    """
    job_id = jobs.submit(ws, kind, params)
    end = time.monotonic() + timeout
    while not ready(ws):
        if ws.store.job(job_id)["status"] not in liveness.ACTIVE or time.monotonic() > end:
            raise RuntimeError(f"job {job_id} ended or stalled before it was ready to be killed: "
                               f"{ws.store.job(job_id)}")
        time.sleep(0.01)
    pid = int(ws.store.job(job_id)["pid"])
    kill_worker(pid)
    while ws.store.job(job_id)["status"] in liveness.ACTIVE and time.monotonic() < end:
        jobs.refresh(ws)
        time.sleep(0.05)
    while liveness.worker_pid(ws) is not None and time.monotonic() < end:
        time.sleep(0.02)  # the dead worker's lock can outlive it by a moment (see docs/reliability.md)
    interrupted = ws.store.job(job_id)["status"] == "interrupted"
    runs = ws.store.runs()
    left = int((runs["status"] == "running").sum()) if len(runs) else 0
    new = jobs.resume(ws, job_id)
    rec = jobs.wait(ws, new, timeout=timeout)
    return {"interrupted": interrupted, "runs_left_running": left, "resumed": rec["status"] == "done",
            "job": job_id, "resumed_job": new, "resumed_as": f"{rec['status']} {rec['error']}".strip()}


def kill_worker(pid: int) -> None:
    """SIGKILL a job worker and, when it leads its own process group, its helpers (data loaders) with it."""
    if pid <= 1 or pid == os.getpid():
        raise ValueError(f"{pid} is not a worker's pid")
    if os.getpgid(pid) != pid:
        os.kill(pid, signal.SIGKILL)
        return
    os.killpg(pid, signal.SIGKILL)
    end = time.monotonic() + 30
    while time.monotonic() < end:  # until the whole group is gone (a dying helper may hold the worker lock)
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)


def embed_ready(ws: Workspace) -> bool:
    """At least one embedding chunk is written (the job is mid-way)."""
    return any((ws.artifacts.root / "embeddings").glob("*/chunk-*.ids.npy"))


def train_ready(ws: Workspace) -> bool:
    """A training run is recorded and running."""
    runs = ws.store.runs()
    return bool(len(runs) and (runs["status"] == "running").any())


def embed_kill(dest: Path, *, n: int = 400) -> dict:
    """Kill -9 an embedding job (tiny OpenCLIP, 8-image chunks) mid-way, resume it, and compare its vectors
    with an uninterrupted embedding of the same images (``consistent``)."""
    from curation.features.embed import embed_workspace, load_embeddings
    ws = image_workspace(dest / "killed", n)
    res = worker_kill_trial(ws, "embed", {"encoder": TINY, "chunk_size": 8, "batch_size": 8, "num_workers": 0},
                            ready=embed_ready)
    got = load_embeddings(ws, TINY)
    ref = embed_workspace(image_workspace(dest / "clean", n), TINY, chunk_size=64, num_workers=0)
    res["complete"] = got is not None and np.array_equal(got.ids, ws.store.sample_ids())
    res["consistent"] = bool(res["complete"] and np.allclose(got.vectors, ref.vectors, atol=1e-5))
    stop_workers(ws)
    return res


def train_kill(dest: Path, *, n: int = 1000, dim: int = 32) -> dict:
    """Kill -9 a training job mid-run (imported vectors, a few seconds of training), resume it."""
    from curation.features.imported import import_embeddings
    ws = make_workspace(dest, n, n_classes=4)
    rng = np.random.default_rng(1)
    np.save(dest / "vectors.npy", rng.normal(size=(n, dim)).astype(np.float32))
    import_embeddings(ws, dest / "vectors.npy")
    res = worker_kill_trial(ws, "train", {"epochs": 20, "patience": 0, "batch_size": 32, "device": "cpu"},
                            ready=train_ready)
    runs = ws.store.runs()
    res["run_statuses"] = sorted(runs["status"].tolist())
    stop_workers(ws)
    return res


def stop_workers(ws: Workspace) -> None:
    """Stop the job workers this workspace's jobs ran in (a warm worker would otherwise idle on)."""
    for pid in {int(p) for p in ws.store.jobs(limit=1000)["pid"].dropna() if p}:
        if liveness.process_alive(pid):
            os.kill(pid, signal.SIGTERM)


# ---------------------------------------------------------------------- bad input
def bad_files_trial(root: Path) -> tuple[int, int]:
    """Ingest the bad-file corpus: (files handled: ingested when usable, else skipped with the expected
    reason; files tried)."""
    corpus = make_corpus(root)
    ws = Workspace.create(root / "ws")
    report = ingest(ws, corpus.folder)
    reasons = dict(zip(report.skipped["path"], report.skipped["reason"]))
    present = set(ws.store.samples()["path"])
    handled = sum((name in present) if why is None else str(reasons.get(shown(name), "")).startswith(why)
                  for name, why in corpus.expected.items())
    return handled, len(corpus.expected)


def bad_manifests_trial(root: Path) -> tuple[int, int]:
    """Ingest each broken manifest: (handled: refused with a message naming the file and matching what it
    must say, or ingested with each bad row skipped with a reason naming file and row; manifests tried)."""
    folder, cases = make_bad_manifests(root)
    handled = 0
    for k, case in enumerate(cases):
        ws = Workspace.create(root / f"ws{k}")
        try:
            r = ingest(ws, folder / case.name)
        except IngestError as exc:
            handled += case.error is not None and case.name in str(exc) and bool(re.search(case.error, str(exc)))
            continue
        handled += case.error is None and (r.added, len(r.skipped)) == (case.added, case.skipped) and all(
            f"{case.name} row" in x for x in r.skipped["reason"])
    return handled, len(cases)


# ---------------------------------------------------------------------- embedding failures, read-only, full disk
def embed_failure_trial(dest: Path) -> dict[str, bool]:
    """Images that cannot be embedded never break embedding: each case ``True`` when handled.

    Cases: every image gone (a clear error, then a full recovery once the folder is back); a FIFO in place of
    the only image (same); 5 of 9 images broken (counts truthful, failures listed by doctor with reason and
    time, the fixed ones re-embedded by the next run, the rest by ``retry_failed`` only when asked).
    """
    import shutil

    from curation.features.embed import EmbeddingError, embed_workspace, embedding_failures
    from curation.runtime.doctor import doctor

    def fresh(name: str, n: int) -> tuple[Workspace, Path]:
        folder = dest / name / "imgs"
        folder.mkdir(parents=True)
        rng = np.random.default_rng(0)
        from PIL import Image

        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        ws = Workspace.create(dest / name / "ws")
        ingest(ws, folder)
        return ws, folder

    out: dict[str, bool] = {}
    ws, folder = fresh("gone", 9)
    shutil.move(folder, folder.with_name("away"))
    try:
        embed_workspace(ws, TINY, num_workers=0)
        clear = False
    except EmbeddingError as exc:
        clear = "None of the 9 images" in str(exc)
    listed = len(embedding_failures(ws)) == 9 and any("could not be embedded" in p for p in doctor(ws).problems)
    shutil.move(folder.with_name("away"), folder)
    out["all images gone, then back"] = clear and listed and len(embed_workspace(ws, TINY, num_workers=0)) == 9

    ws, folder = fresh("fifo", 1)
    only = next(folder.glob("*.png"))
    shutil.move(only, folder.parent / "kept.png")
    os.mkfifo(only)
    try:
        embed_workspace(ws, TINY, num_workers=0)
        clear = False
    except EmbeddingError as exc:
        clear = "not a regular file" in str(exc)
    only.unlink()
    shutil.move(folder.parent / "kept.png", only)
    out["a FIFO for the only image, then the image"] = clear and len(embed_workspace(ws, TINY, num_workers=0)) == 1

    ws, folder = fresh("partial", 9)
    broken = sorted(folder.glob("*.png"))[:5]
    for b in broken:
        shutil.move(b, b.with_suffix(".bak"))
        b.write_bytes(b"not an image")
    msgs: list[str] = []
    emb = embed_workspace(ws, TINY, num_workers=0, progress=lambda f, m: msgs.append(m))
    truthful = len(emb) == 4 and "embedded 4 of 9 images" in msgs[-1] and "5 could not be read" in msgs[-1]
    failed = embedding_failures(ws)
    listed = len(failed) == 5 and failed["reason"].str.len().gt(0).all() and failed["time"].notna().all()
    same = len(embed_workspace(ws, TINY, num_workers=0)) == 4  # nothing changed: nothing retried
    for b in broken[:2]:
        shutil.move(b.with_suffix(".bak"), b)
    fixed = len(embed_workspace(ws, TINY, num_workers=0)) == 6
    asked = len(embed_workspace(ws, TINY, num_workers=0, retry_failed=True)) == 6 and \
        int(embedding_failures(ws)["attempts"].max()) == 2
    out["5 of 9 broken, 2 fixed"] = truthful and listed and same and fixed and asked
    return out


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True, check=False).returncode == 0


def _umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def read_only_trial(dest: Path) -> dict[str, bool]:
    """A workspace on a read-only mount and on a full disk (root only: bind and tmpfs mounts; else skipped).

    Cases: opening writes nothing and reads work; a label write is refused naming the reason ("nothing was
    written"); the CLI refuses writing commands with one line ``workspace is read-only: ...`` and exit 1 and
    runs ``doctor``; on a full disk a commit and a migrating open both say "nothing was written" and the
    labels stay as they were.
    """
    from curation.data.store import ReadOnlyStore, StoreError, StoreFull

    out: dict[str, bool] = {}
    if not (hasattr(os, "geteuid") and os.geteuid() == 0):
        return out
    ws = make_workspace(dest / "src", 100)
    ws.store.close()
    view = dest / "ro"
    view.mkdir()
    if not _mount("--bind", "-o", "ro", str(ws.root), str(view)):
        return out
    try:
        before = {p.name: p.stat().st_mtime_ns for p in ws.root.glob("curation.db*")}
        ro = Workspace.open(view)
        out["read-only: opens and reads, writes nothing"] = ro.read_only and len(ro.store.sample_ids()) == 100 and \
            before == {p.name: p.stat().st_mtime_ns for p in ws.root.glob("curation.db*")}
        try:
            ro.store.set_label(ro.store.sample_ids()[:3], 1)
            out["read-only: a label write is refused"] = False
        except ReadOnlyStore as exc:
            out["read-only: a label write is refused"] = "nothing was written" in str(exc)
        ro.store.close()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        r = subprocess.run([sys.executable, "-m", "curation", "embed", str(view)], capture_output=True, text=True,
                           env=env, check=False)
        out["read-only: CLI one line, exit 1"] = r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 \
            and r.stderr.startswith("workspace is read-only: ")
        r = subprocess.run([sys.executable, "-m", "curation", "doctor", str(view)], capture_output=True, text=True,
                           env=env, check=False)
        out["read-only: doctor runs"] = r.returncode in (0, 1) and "read-only workspace" in r.stdout and \
            "Traceback" not in r.stderr  # exit 1: it reports the fake samples' missing files
    finally:
        _umount(view)
    small = dest / "small"
    small.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)):
        return out
    try:
        full = Workspace.create(small / "ws")
        full.store.add_classes(["cat"])
        full.store.close()
        import shutil

        shutil.copytree(full.root, small / "old")
        con = sqlite3.connect(small / "old" / "curation.db")
        con.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
        con.commit()
        con.close()
        full = Workspace.open(small / "ws")
        full.store.class_names()
        with open(small / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        try:
            full.store.add_classes([f"class-{i}-" + "x" * 200 for i in range(3000)])
            out["full disk: commit says nothing was written"] = False
        except StoreFull as exc:
            out["full disk: commit says nothing was written"] = "nothing was written" in str(exc) and \
                full.store.class_names() == ["cat"]
        try:
            Workspace.open(small / "old")
            out["full disk: a migrating open says nothing was written"] = False
        except StoreError as exc:
            out["full disk: a migrating open says nothing was written"] = "nothing was written" in str(exc)
        out["full disk: a current workspace still opens"] = Workspace.open(small / "ws").store.class_names() == ["cat"]
        full.store.close()
    finally:
        _umount(small)
    return out


def hostile_text_trial(dest: Path) -> dict[str, bool]:
    """Hostile names: the one rendering rule leaves no Markdown construct (checked structurally; the browser
    test renders them on every page) and a CSV export holds no cell a spreadsheet would run as a formula."""
    from curation.data.export import export
    from curation.ui.text import plain

    hostile = ["![x](http://127.0.0.1:1/b.png)", "[a](https://evil.example)", "https://evil%2Eexample/login",
               "www.evil.example", "m@evil.example", "<img src=x>", "abc\u202egpj", ":material/home:", "$x$"]
    punct = set("!\"#$%&'()*+,-./:;<=>?@[]^_`{|}~")
    ok_plain = True
    for h in hostile:
        bare = plain(h).replace("\\\\", "").replace("\u2060", "")
        ok_plain &= all(ch not in punct or (i and bare[i - 1] == "\\") for i, ch in enumerate(bare))
        ok_plain &= "\u202e" not in plain(h)
    ws = make_workspace(dest / "csv", 6)
    for k, name in enumerate(['=HYPERLINK("http://evil.example","x")', "+cmd|' /C calc'!A0", "@SUM(1)"]):
        cid = ws.store.add_classes([name])[0]
        ws.store.set_label(ws.store.sample_ids()[k:k + 1], cid)
    path = export(ws, "csv", dest / "out.csv")
    cells = pd.read_csv(path, dtype=str, keep_default_na=False).to_numpy().ravel()
    live = [c for c in cells if c and c[0] in "=+-@\t\r" and not re.fullmatch(r"[+-]?\d+(\.\d*)?", c)]
    return {"user text rendered plain": bool(ok_plain), "CSV export: no live formula": not live}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=5, help="kills per writer mode, and server kills")
    ap.add_argument("--n", type=int, default=100_000, help="samples in the bulk-relabel workspace")
    ap.add_argument("--actions", type=int, default=1000)
    ap.add_argument("--worker-trials", type=int, default=2, help="kills of embedding and of training workers")
    ap.add_argument("--ingest-trials", type=int, default=2, help="kills of the CLI ingest, at each of two points")
    ap.add_argument("--ingest-n", type=int, default=1200, help="images in each killed ingest")
    ap.add_argument("--no-server", action="store_true", help="skip the app-server kills (Chromium)")
    a = ap.parse_args()
    os.environ.setdefault("CURATION_WORKER_IDLE", "2")
    os.environ.setdefault("CURATION_WARM_UMAP", "0")
    kills: list[bool] = []
    lost = half = 0
    with tempfile.TemporaryDirectory() as tmp:
        ws = make_workspace(Path(tmp) / "bulk", a.n)
        db = ws.root / "curation.db"
        for mode in ("bulk", "undo", "small"):
            res = [kill_trial(db, mode, seed=s, max_wait=6.0) for s in range(a.trials)]
            kills += [r["ok"] for r in res]
            lost, half = lost + sum(r["lost_events"] for r in res), half + sum(r["half"] for r in res)
            print(f"kill -9 during {mode:>5} writes ({a.n:,} samples): survived {sum(r['ok'] for r in res)}/"
                  f"{len(res)}, writer alive at the kill {sum(r['alive_at_kill'] for r in res)}/{len(res)}, "
                  f"acknowledged before the kill {min(r['acked_before_kill'] for r in res)}+ per trial, "
                  f"acknowledged batches {sum(r['acked'] for r in res)} "
                  f"({sum(r['acked_events'] for r in res):,} events), lost {sum(r['lost'] for r in res)}, "
                  f"half batches {sum(r['half'] for r in res)}")
        if Path(CHROMIUM).exists() and a.trials and not a.no_server:
            ws.store.set_label(ws.store.sample_ids(), 1, source="bulk", note="relabel every sample")
            server = AppServer(ws.root, Path(tmp) / "server.log")
            server.start()
            with chromium() as browser:
                res = [server_kill_trial(server, browser, db, delay=random.Random(s).uniform(0, 4.0))
                       for s in range(a.trials)]
            server.stop()
            kills += [r["ok"] for r in res]
            lost, half = lost + sum(r["lost_events"] for r in res), half + sum(r["half"] for r in res)
            print(f"kill -9 of the app server during a History-page undo of a {a.n:,}-sample batch: survived "
                  f"{sum(r['ok'] for r in res)}/{len(res)} (write transaction open at the kill "
                  f"{sum(r['locked'] for r in res)}, undo committed first {sum(r['committed'] for r in res)}), "
                  f"{res[-1]['acked_events']:,} acknowledged events at stake, lost {sum(r['lost'] for r in res)}, "
                  f"half batches {sum(r['half'] for r in res)}")
        for name, trial in (("embedding", embed_kill), ("training", train_kill)):
            res = [trial(Path(tmp) / f"{name}{s}") for s in range(a.worker_trials)]
            ok = [r["interrupted"] and r["resumed"] and not r["runs_left_running"] and r.get("consistent", True)
                  for r in res]
            kills += ok
            for r, good in zip(res, ok):
                if not good:
                    print(f"  failed trial: {r}")
            print(f"kill -9 of a worker during {name}: interrupted, resumed to done"
                  f"{', vectors equal to an uninterrupted run' if name == 'embedding' else ', no run left running'}"
                  f": {sum(ok)}/{len(res)}")
        for at in ("checking", "writing"):
            res = [ingest_kill(Path(tmp) / f"ingest-{at}{s}", n=a.ingest_n, at=at) for s in range(a.ingest_trials)]
            kills += [r["ok"] for r in res]
            print(f"kill -9 of `curation ingest` of {a.ingest_n:,} images while {at}: survived "
                  f"{sum(r['ok'] for r in res)}/{len(res)} (seen mid-ingest and alive at the kill "
                  f"{sum(r['seen'] and r['alive_at_kill'] for r in res)}, rows after the kill "
                  f"{sorted({r['samples_after'] for r in res})}: all or nothing; re-ingest complete "
                  f"{sum(r['reingested'] for r in res)})")
        print(f"KILLS SURVIVED: {sum(kills)}/{len(kills)}")
        print(f"ACKNOWLEDGED EVENTS LOST: {lost} (half batches visible: {half})")
        ws2 = make_workspace(Path(tmp) / "conc", 3 * a.actions)
        t = time.perf_counter()
        r = concurrent_trial(ws2.root / "curation.db", writers=3, actions=a.actions)
        print(f"CONCURRENT ACTIONS LANDED: {r['landed']}/{r['sent']} (3 processes x {a.actions}; 'database is "
              f"locked' errors {r['errors']}, store ok {r['ok']}, {time.perf_counter() - t:.1f} s)")
        handled, n = bad_files_trial(Path(tmp) / "badfiles")
        print(f"BAD FILES HANDLED: {handled}/{n} (ingested correctly or skipped with the expected reason)")
        handled, n = bad_manifests_trial(Path(tmp) / "badmanifests")
        print(f"BROKEN MANIFESTS HANDLED WITH A MESSAGE: {handled}/{n} (refused naming the file, or bad rows "
              "skipped naming file and row)")
        for title, trial in (("EMBEDDING FAILURES HANDLED", embed_failure_trial),
                             ("READ-ONLY AND FULL-DISK CASES HANDLED", read_only_trial),
                             ("HOSTILE TEXT CASES HANDLED", hostile_text_trial)):
            res = trial(Path(tmp) / title.split()[0].lower())
            print(f"{title}: {sum(res.values())}/{len(res)}" + ("" if res else " (needs root for the mounts)"))
            for case, good in res.items():
                print(f"  {'ok  ' if good else 'FAIL'} {case}")


if __name__ == "__main__":
    main()
