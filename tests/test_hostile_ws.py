"""Hostile WebSocket clients against a running Warden: deep JSON, floods, big binary frames and bogus
resumes each get what docs/protocol.md promises (an `error`, or a fresh snapshot), the connection
stays, and a bystander client keeps receiving every change. (tests/test_ws.py has the basic cases.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tally import TallyRecorder
from tests.test_ws import live, opening, ping, read_until, state_is, warden_and_api
from tests.webharness import daemon_of
from web.ws import MAX_MESSAGE

#: Sent on an open connection: each must be answered with an `error`.
INVALID = [
    "[" * (MAX_MESSAGE - 100),  # nested deeper than the JSON parser recurses
    '{"type": "ping"' * 1000,
    json.dumps({"type": "resume", "seq": 1.5, "boot": "x"}),
    json.dumps({"type": "resume", "seq": True, "boot": "x"}),
    json.dumps({"type": "resume", "seq": None, "boot": "x"}),
    json.dumps({"type": "resume", "seq": [1], "boot": "x"}),
    json.dumps({"type": "resume", "seq": 1, "boot": 7}),
    json.dumps({"type": "resume"}),
    json.dumps({"type": "subscribe_logs", "daemons": [{"$ne": 1}]}),
    json.dumps({"type": ["ping"]}),
    json.dumps({"type": "\u0000" * 100}),
    "NaN",
    "",
]


@pytest.mark.soak
async def test_hostile_messages_get_errors_or_snapshots_and_spare_the_bystander(
    tmp_path: Path, tally: TallyRecorder, soak: bool
) -> None:
    flood = 20_000 if soak else 2_000
    answered: dict[str, bool] = {}  # what was sent → answered as the protocol says
    async with warden_and_api(tmp_path) as (warden, session), live(session) as bystander, live(session) as client:
        await opening(bystander)
        await opening(client)

        for text in INVALID:
            await client.send_str(text)
            [reply] = await read_until(client, lambda m: m["type"] == "error")
            answered[text[:40]] = bool(reply["message"])
        await client.send_bytes(b"\x00" * (MAX_MESSAGE - 1))
        [reply] = await read_until(client, lambda m: m["type"] == "error")
        answered["binary frame"] = "binary" in reply["message"]

        # Resumes the server cannot honour exactly: a fresh snapshot of the current state.
        for seq, boot in ((-5, warden.boot_id), (10**30, warden.boot_id), (0, "another-boot"), (-(10**30), "")):
            await client.send_json({"type": "resume", "seq": seq, "boot": boot})
            [snapshot] = await read_until(client, lambda m: m["type"] == "snapshot")
            answered[f"resume {seq} {boot}"] = snapshot["seq"] == warden.hub.seq

        # A flood of pings sent without reading: the connection stays and the bystander is not held up.
        for _ in range(flood):
            await client.send_str(json.dumps({"type": "ping"}))
        await daemon_of(warden, "worker").update_status("during the flood")
        await read_until(bystander, state_is("worker", message="during the flood"))
        answered["bystander during the flood"] = await ping(bystander) == [{"type": "pong"}]
        # The flooder still gets the change, and still an answer.
        await read_until(client, state_is("worker", message="during the flood"))
        answered["the flood"] = (await ping(client))[-1] == {"type": "pong"}

        # The same bogus resumes at connect, in the query string.
        for query in ("?resume=-5", f"?resume={10**30}&boot={warden.boot_id}", "?resume=1.5", "?resume=%00&boot=%00"):
            async with live(session, query) as resumed:
                _, snapshot = await opening(resumed)
                answered[query] = snapshot["type"] == "snapshot" and snapshot["seq"] == warden.hub.seq

    tries = len(answered)
    lost = sum(not ok for ok in answered.values())
    tally.record(
        "websocket",
        f"deep JSON, malformed and mistyped messages, a 64 KiB binary frame, bogus resumes, {flood} pings unread",
        tries=tries + flood,
        outcome="each answered with an error or a fresh snapshot; connection kept; bystander unaffected",
        lost=lost,
    )
    assert [sent for sent, ok in answered.items() if not ok] == []
    assert lost == 0
