"""The Streamlit layer: the only package that imports streamlit (cached loaders, state keys, widgets)."""
