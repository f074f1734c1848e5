"""Sales processes on the platform, each declared in metadata and each a default plugin of its own:

* ``conversions``: what a record turns into (a lead into an account, a contact and an
  opportunity), in one transaction through the record service, with matching candidates;
* ``pools``: pools of unowned records (公海) with claim limits, returns and scheduled recycling;
* ``follow_up``: follow-up signals (last and next activity, when the owner last touched a record)
  kept by the engine in the transaction of each activity write.

The three never import each other (``.importlinter``): what two of them need moves down into the
platform.
"""
