"""The documents capability as a default plugin (``"documents"``)."""
