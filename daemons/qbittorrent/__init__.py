"""qBittorrent: Warden's client for its Web API, and a qbittorrent-nox of Warden's own for tests and demo mode."""
