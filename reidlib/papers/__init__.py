"""Notebook support, one module per paper: which runs fill which table, and how figures are drawn from
them. Notebooks call these so that their cells stay short (docs/design.md, "Notebook anatomy")."""
