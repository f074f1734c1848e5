"""Documents rendered from records (a quote as a PDF): templates declared in metadata (the
``document`` kind, docs/metadata.md#documents), rendered with jinja2 into a PDF."""
