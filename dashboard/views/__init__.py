"""The dashboard's pages: scripts that ``app.py``'s ``st.navigation`` runs by file path.

Nothing imports them; the folder is a package so that the import-linter contracts
(pyproject.toml) see what the pages import.
"""
