"""The dashboard (streamlit run streamlit_app.py): its pages, each with its title, icon and address."""
import streamlit as st

PAGES = [
    st.Page("pages/home.py", title="Home", icon="🐜", default=True),
    st.Page("pages/1_Train.py", title="Train", icon="🏋️", url_path="Train"),
    st.Page("pages/2_Compare.py", title="Compare", icon="📊", url_path="Compare"),
    st.Page("pages/5_Experiments.py", title="Experiments", icon="🧪", url_path="Experiments"),
    st.Page("pages/6_Mistakes.py", title="Mistakes", icon="🧐", url_path="Mistakes"),
    st.Page("pages/3_Classify.py", title="Classify", icon="🔍", url_path="Classify"),
    st.Page("pages/4_Your_own_data.py", title="Your own data", icon="🗂️", url_path="Your_own_data"),
]

st.navigation(PAGES).run()
