"""Warden's web side: REST API, the live WebSocket, the Daemons page. See docs/protocol.md."""
