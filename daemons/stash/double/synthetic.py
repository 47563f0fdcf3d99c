"""A large synthetic library for the double: plausible scenes and files, nothing on disk.

Built for speed (100,000 scenes in about a second): plain arithmetic on `random()` rather than
`randrange`, and one library change for the whole batch.
"""

from __future__ import annotations

import random

from daemons.stash.double.library import Library
from daemons.stash.double.records import Scene, VideoFile

_WORDS = ("amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "harbor", "island", "juniper")
_SIZES = ((640, 480), (1280, 720), (1920, 1080), (3840, 2160), (1080, 1920))
_CODECS = (("h264", "aac", "mp4"), ("hevc", "aac", "matroska"), ("vp9", "opus", "webm"), ("h264", "", "mp4"))
_SUFFIXES = {"mp4": "mp4", "matroska": "mkv", "webm": "webm"}
_FRAME_RATES = (24.0, 25.0, 29.97, 30.0, 60.0)


def add_synthetic_scenes(library: Library, count: int, *, seed: int = 0, span: int = 30 * 86400) -> list[str]:
    """Add `count` scenes created and updated within `span` seconds before now; returns their ids.

    Titles repeat and timestamps collide, so ties in every sort order are common, as in a real library.
    """
    rng = random.Random(seed)
    draw = rng.random
    end = library.now()
    folders = [(word, library.folder_id(f"/library/synthetic/{word}")) for word in _WORDS]
    scenes = []
    for _ in range(count):
        scene_id = library.next_id("scene")
        folder, folder_id = folders[int(draw() * len(folders))]
        width, height = _SIZES[int(draw() * len(_SIZES))]
        video_codec, audio_codec, container = _CODECS[int(draw() * len(_CODECS))]
        duration = round(30.0 + draw() * 3570.0, 3)
        bit_rate = 500_000 + int(draw() * 11_500_000)
        created = end - int(draw() * span)
        updated = created + int(draw() * (end - created + 1))
        word = _WORDS[int(draw() * len(_WORDS))]
        path = f"/library/synthetic/{folder}/{word}-{scene_id}.{_SUFFIXES[container]}"
        file = VideoFile(
            library.next_id("file"),
            path,
            folder_id,
            int(duration * bit_rate / 8),
            duration,
            width,
            height,
            video_codec,
            audio_codec,
            _FRAME_RATES[int(draw() * len(_FRAME_RATES))],
            bit_rate,
            container,
            created,
            created,
            created,
            f"{rng.getrandbits(64):016x}",
        )
        scenes.append(Scene(scene_id, f"{word.title()} {int(draw() * 1000)}", None, False, created, updated, [file]))
    library.insert_scenes(scenes)
    return [scene.id for scene in scenes]
