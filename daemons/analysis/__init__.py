"""Video analysis: the analyser interface and Warden's built-in ffmpeg analyser."""
