"""One module per resource; handlers are named verb_noun and their docstrings become OpenAPI summaries."""
