"""The metadata of documents, as a default plugin gives it to the loader (``"documents.kinds"``)."""
