"""Downloads: placing the media files of completed torrents into the library."""
