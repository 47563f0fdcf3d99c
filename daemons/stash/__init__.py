"""Talking to Stash: the client, the local scene table, and the Stash double used by tests and the demo."""
