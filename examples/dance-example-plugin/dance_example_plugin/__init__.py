"""dance node types of the example plugin of docs/custom-nodes.md (entry-point group
`dance.nodes`, declared in pyproject.toml)."""
