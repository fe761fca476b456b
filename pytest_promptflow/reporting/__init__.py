"""Reports of a promptflow session: what a failing item prints, and later terminal/CSV/HTML."""
