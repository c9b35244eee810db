"""Bundled simulator configs: architecture YAMLs (ws32, ...), energy tables (horowitz45, ...), topology CSVs."""
