"""The metadata of approvals, as a default plugin gives it to the loader (``"approvals.kinds"``)."""
