"""The Train page's parts: head and fine-tune forms, the device line, live curves of the running run, re-embedding."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from curation.data.workspace import Workspace
from curation.ui import jobpanel
from curation.ui.text import plain
from curation.ui.widgets import guard

HEAD, FINETUNE = "head", "finetune"
MODES = {HEAD: "Head on embeddings (seconds)", FINETUNE: "Fine-tune image tower (minutes on GPU)"}
AMP = {"auto": "Auto (bf16 / fp16 on a GPU)", "bf16": "bf16", "fp16": "fp16 (CUDA)", "off": "Off (float32)"}
CPU_WARN_SECONDS = 600.0
"""Fine-tunes estimated to take longer than this on a CPU get a warning."""


def device_line() -> str:
    """Show and return the device training will use (CUDA, then Apple MPS, then CPU)."""
    device = "cpu"
    with guard("finding the device"):
        import torch

        from curation.models.heads import pick_device

        device = pick_device()
        name = torch.cuda.get_device_name(0) if device == "cuda" else {"mps": "Apple GPU"}.get(device, "no GPU found")
        st.caption(f"Trains on **{plain(device)}** ({plain(name)}).")
    return device


def head_form(ws: Workspace) -> None:
    """Options of a head on the cached embeddings; submits a ``train`` job."""
    with st.form("train"):
        c1, c2, c3, c4 = st.columns(4)
        kind = c1.selectbox("Head", ["linear", "mlp"], format_func={"linear": "Linear", "mlp": "MLP"}.get)
        epochs = c2.number_input("Epochs (at most; stops early)", min_value=1, max_value=2000, value=100, step=10)
        class_weight = c3.checkbox("Weight classes by inverse frequency", value=True)
        elr = c4.checkbox("Noise-robust (ELR)", value=False, disabled=ws.store.task != "single",
                          help="Early-learning regularisation keeps the head near its early predictions, so it "
                               "memorises fewer wrong labels (single-label only).")
        if st.form_submit_button("Train", type="primary"):
            jobpanel.submit(ws, "train", {"kind": kind, "epochs": int(epochs), "class_weight": bool(class_weight),
                                          "elr": bool(elr)})


def finetune_form(ws: Workspace, device: str) -> None:
    """Options of an image-tower fine-tune, with the tower it starts from and a CPU time estimate;
    submits a ``finetune`` job."""
    from curation.models.finetune import base_encoder_name, estimate_seconds

    encoder = None
    with guard("choosing the encoder to tune"):
        encoder = base_encoder_name(ws)
        st.caption(f"Tunes the image tower of **{plain(encoder)}** plus a linear head (first fitted on the frozen features).")
    if encoder is None:
        return
    with st.form("finetune"):
        c1, c2, c3, c4 = st.columns(4)
        unfreeze = c1.number_input("Blocks to unfreeze (0 = head only)", min_value=0, max_value=48, value=2,
                                   key="ft_unfreeze")
        epochs = c2.number_input("Epochs (at most; stops early)", min_value=1, max_value=200, value=10,
                                 key="ft_epochs")
        augment = c3.checkbox("Augment (crop, flip, colour)", value=True, key="ft_augment")
        amp = c4.selectbox("Mixed precision", list(AMP), format_func=AMP.get, key="ft_amp")
        if st.form_submit_button("Fine-tune", type="primary"):
            jobpanel.submit(ws, "finetune", {"unfreeze_blocks": int(unfreeze), "epochs": int(epochs),
                                             "augment": bool(augment), "amp": amp})
    if device == "cpu":
        ids = ws.store.sample_ids()
        n_labelled = int((ws.store.label_matrix(ids) != 0).any(1).sum())
        seconds = estimate_seconds(n_labelled, len(ids), epochs=int(epochs), encoder=encoder)
        if seconds > CPU_WARN_SECONDS:
            st.warning(f"No GPU here: fine-tuning {n_labelled:,} labelled of {len(ids):,} images for {int(epochs)} "
                       f"epochs takes about {seconds / 3600:.1f} h on this CPU. A head on the embeddings takes "
                       "seconds; or unfreeze fewer blocks, train fewer epochs, or use a machine with a GPU.")


def curves_figure(curves: list[dict[str, Any]], *, epochs: int | None = None, title: str = "") -> go.Figure:
    """Loss (left axis) and validation metric (right axis, 0-1) per epoch.

    Parameters
    ----------
    curves : per-epoch records with ``epoch``, ``train_loss`` and, with a validation set, ``val_loss``
        and ``val_metric`` (as runs record them).
    epochs : the planned number of epochs (fixes the x range while a run is under way).
    """
    df = pd.DataFrame(curves, columns=["epoch", "train_loss", "val_loss", "val_metric"])
    fig = go.Figure()
    for col, name, dash in (("train_loss", "train loss", "solid"), ("val_loss", "val loss", "dot")):
        if df[col].notna().any():
            fig.add_trace(go.Scatter(x=df["epoch"], y=df[col], name=name, mode="lines+markers",
                                     line={"dash": dash}))
    if df["val_metric"].notna().any():
        fig.add_trace(go.Scatter(x=df["epoch"], y=df["val_metric"], name="val accuracy", mode="lines+markers",
                                 yaxis="y2"))
    fig.update_layout(title=title, height=320, margin={"l": 40, "r": 40, "t": 40, "b": 30},
                      xaxis={"title": "epoch", "range": [0.5, epochs + 0.5] if epochs else None},
                      yaxis={"title": "loss"}, yaxis2={"title": "val accuracy", "overlaying": "y", "side": "right",
                                                       "range": [0, 1], "tickmode": "linear", "tick0": 0,
                                                       "dtick": 0.2, "showgrid": False},
                      legend={"orientation": "h", "y": -0.25})
    return fig


def shown_run(runs: pd.DataFrame) -> int | None:
    """The run whose curves to plot: the newest running one, else the newest with curves; None without one."""
    if runs.empty:
        return None
    running = runs.index[runs["status"] == "running"]
    if len(running):
        return int(running.max())
    with_curves = [int(i) for i, m in runs["metrics"].items() if isinstance(m, dict) and m.get("curves")]
    return max(with_curves) if with_curves else None


def live_curves(ws: Workspace, runs: pd.DataFrame) -> None:
    """Curves of the running run, polled every second while a training job is queued or runs (else those of the
    newest run), and, once a run is done, the way on to Evaluate."""
    from curation.runtime import jobs

    training = jobs.active_jobs(ws)["kind"].isin(["train", "finetune"]).any()
    live = bool(training or (len(runs) and (runs["status"] == "running").any()))

    @st.fragment(run_every="1s" if live else None)
    def panel() -> None:
        with guard("reading the run's curves"):
            now = ws.store.runs()
            run_id = shown_run(now)
            if run_id is None:
                return
            rec = now.loc[run_id]
            metrics = rec["metrics"] if isinstance(rec["metrics"], dict) else {}
            st.plotly_chart(curves_figure(metrics.get("curves") or [], epochs=metrics.get("epochs"),
                                          title=f"Run {run_id} · {rec['kind']} · {rec['status']}"),
                            key="train_curves")
            if rec["status"] == "done":
                st.page_link("pages/5_Evaluate.py", label=f"Evaluate run {run_id}: metrics, confusion matrix, mistakes",
                             icon=":material/analytics:")

    panel()


def reembed_form(ws: Workspace, runs: pd.DataFrame) -> None:
    """For finished fine-tune runs: re-embed every image with the tuned tower (it becomes the active encoder)."""
    from curation.features.tuned import FINETUNE_RUN_KIND as RUN_KIND
    from curation.features.tuned import encoder_name

    done = runs[(runs["kind"] == RUN_KIND) & (runs["status"] == "done")] if len(runs) else runs
    if done.empty:
        return
    st.subheader("Re-embed with a tuned tower")
    acc = {int(i): m.get("accuracy") for i, m in done["metrics"].items()}
    run_id = st.selectbox("Fine-tune run", [int(i) for i in done.index], key="reembed_run",
                          format_func=lambda r: f"Run {r}" + ("" if acc[r] is None or np.isnan(acc[r])
                                                              else f" · val accuracy {acc[r]:.3f}"))
    if ws.store.meta("encoder") == encoder_name(run_id):
        st.caption(f"The images are embedded with this tower ({plain(encoder_name(run_id))}).")
    st.caption("Embeds every image with the tuned tower, makes it the active encoder and recomputes the map, "
               "clusters and suggestions. Zero-shot and text search are off with a tuned tower.")
    if st.button("Re-embed with this tuned tower", key="reembed"):
        jobpanel.submit(ws, "reembed", {"run_id": int(run_id)})
