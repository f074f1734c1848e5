"""The approvals capability as a default plugin (``"approvals"``)."""
