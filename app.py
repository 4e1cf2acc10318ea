"""The studio's entry point: its pages in loop order (see → fix → retrain → inspect), Home first.

Run with ``streamlit run app.py -- --workspace PATH``. Each page is a thin script in ``pages/``.
"""

import streamlit as st

PAGES = [
    st.Page("pages/0_Home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/1_Map.py", title="Map", icon=":material/scatter_plot:"),
    st.Page("pages/2_Clusters.py", title="Clusters", icon=":material/workspaces:"),
    st.Page("pages/3_Review.py", title="Review", icon=":material/fact_check:"),
    st.Page("pages/4_Train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/5_Evaluate.py", title="Evaluate", icon=":material/analytics:"),
    st.Page("pages/6_Search.py", title="Search", icon=":material/search:"),
    st.Page("pages/7_History.py", title="History", icon=":material/history:"),
]

st.navigation(PAGES).run()
