"""The pages of the Streamlit app (run by st.navigation, one script each)."""
