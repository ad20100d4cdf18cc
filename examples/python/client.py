"""A wshub client written from docs/PROTOCOL.md alone, and a check of that document.

It talks to a running `wshub` server the way any application would: two users subscribe to a
room, see each other join, publish, list presence, read history; one goes away while
messages are published (over WebSocket and through the HTTP API), comes back and recovers
exactly what it missed. Every step is checked; the first failure ends the program with
exit status 1.

    python client.py --url ws://127.0.0.1:8080/ws --api http://127.0.0.1:8080 --api-key KEY

Only the `websockets` package is needed. `test.sh` beside it starts a server and runs it.
"""

import argparse
import asyncio
import itertools
import json
import sys
import urllib.error
import urllib.request

import websockets

# Every wait is bounded: a server that does not answer fails the check, never hangs it.
TIMEOUT = 5.0
ROOM = "python:lobby"


class CheckFailed(Exception):
    """A step of the check did not go as docs/PROTOCOL.md says."""


def expect(condition, what):
    if not condition:
        raise CheckFailed(what)


class ServerError(Exception):
    """An `error` frame: the command failed with `code`."""

    def __init__(self, frame):
        super().__init__(f"{frame['code']}: {frame['message']}")
        self.code = frame["code"]


class Client:
    """One connection: commands matched to their replies by `id`, deliveries in a queue."""

    def __init__(self, ws, welcome):
        self.ws = ws
        self.id = welcome["client"]
        self.user = welcome["user"]
        self.ping_interval_ms = welcome["ping_interval_ms"]
        self.ids = itertools.count(1)
        self.waiting = {}  # id -> future of the reply
        self.deliveries = asyncio.Queue()  # message, direct, broadcast, join, leave, ...
        self.positions = {}  # room -> {"epoch", "offset"} of the last message seen
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url):
        ws = await asyncio.wait_for(websockets.connect(url), TIMEOUT)
        welcome = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        expect(welcome.get("type") == "welcome", f"first frame is welcome: {welcome}")
        expect(welcome.get("version") == 1, f"protocol version 1: {welcome}")
        return cls(ws, welcome)

    async def _read(self):
        try:
            async for text in self.ws:
                frame = json.loads(text)
                kind = frame.get("type")
                if kind in ("ok", "pong", "error") and frame.get("id") in self.waiting:
                    self.waiting.pop(frame["id"]).set_result(frame)
                    continue
                if kind == "message":
                    self.positions[frame["room"]] = {
                        "epoch": frame["epoch"],
                        "offset": frame["offset"],
                    }
                elif kind == "unrecoverable":
                    self.positions[frame["room"]] = {
                        "epoch": frame["epoch"],
                        "offset": frame["offset"],
                    }
                self.deliveries.put_nowait(frame)
        except websockets.ConnectionClosed:
            pass
        finally:
            for future in self.waiting.values():
                future.cancel()

    async def command(self, kind, **fields):
        """Sends a command with a fresh `id` and returns its `ok` or `pong`; raises
        ServerError for an `error` reply."""
        command_id = next(self.ids)
        future = asyncio.get_running_loop().create_future()
        self.waiting[command_id] = future
        await self.ws.send(json.dumps({"type": kind, "id": command_id, **fields}))
        reply = await asyncio.wait_for(future, TIMEOUT)
        expect(reply["id"] == command_id, f"reply carries the command's id: {reply}")
        if reply["type"] == "error":
            raise ServerError(reply)
        return reply

    async def subscribe(self, room, since=None):
        fields = {"room": room}
        if since is not None:
            fields["since"] = since
        ok = await self.command("subscribe", **fields)
        self.positions[room] = {"epoch": ok["epoch"], "offset": ok["offset"]}
        return ok

    async def next_delivery(self, kind=None):
        """The next delivered frame (of type `kind` when given; others are skipped)."""
        while True:
            frame = await asyncio.wait_for(self.deliveries.get(), TIMEOUT)
            if kind is None or frame["type"] == kind:
                return frame

    async def close(self):
        await self.ws.close()
        await asyncio.wait_for(self.reader, TIMEOUT)


def api(base, key, method, path, body=None):
    """One request of the HTTP API; returns (status, decoded JSON body)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path, data=data, method=method, headers={"Authorization": f"Bearer {key}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


async def check(url, api_base, api_key, passed):
    def step(what):
        passed.append(what)
        print(f"ok {len(passed)}: {what}")

    # Connect, subscribe, see each other join.
    alice = await Client.connect(url)
    bob = await Client.connect(url)
    expect(alice.id != bob.id, "connection ids differ")
    step(f"welcome frames: {alice.id}, {bob.id}")

    ok = await alice.subscribe(ROOM)
    expect(ok["room"] == ROOM and "epoch" in ok and "offset" in ok, f"subscribe ok: {ok}")
    expect("recovered" not in ok, "no `recovered` without `since`")
    await bob.subscribe(ROOM)
    join = await alice.next_delivery("join")
    expect(join["room"] == ROOM and join["client"] == bob.id, f"join about bob: {join}")
    step("subscribe, and a join event to the other member")

    # Presence lists both connections.
    presence = await alice.command("presence", room=ROOM)
    clients = {entry["client"] for entry in presence["clients"]}
    expect(clients == {alice.id, bob.id}, f"presence lists both: {presence}")
    expect(all("user" in entry for entry in presence["clients"]), "presence entries carry user")
    step("presence")

    # Publish: the publisher's own message comes before its ok; the other member gets it too.
    ok = await alice.command("publish", room=ROOM, data={"text": "hello", "n": 1})
    own = await alice.next_delivery("message")
    expect(own["offset"] == ok["offset"], f"own message before the ok: {own} {ok}")
    got = await bob.next_delivery("message")
    expect(got["data"] == {"text": "hello", "n": 1}, f"data arrives unchanged: {got}")
    expect(got["from"] == alice.id, f"from is the publisher: {got}")
    expect(got["offset"] == ok["offset"], f"offset matches the publish ok: {got} {ok}")
    step(f"publish: offset {ok['offset']} to both members")

    # History: the newest messages, as message frames.
    history = await bob.command("history", room=ROOM, limit=10)
    expect(history["messages"][-1] == got, f"history ends with the message: {history}")
    step("history")

    # Errors never close the connection; ping is answered by pong.
    try:
        await alice.command("subscribe", room="has space")
        raise CheckFailed("a room name with a space is refused")
    except ServerError as error:
        expect(error.code == "bad_request", f"bad room name is bad_request: {error}")
    pong = await alice.command("ping")
    expect(pong["type"] == "pong", f"ping answered by pong: {pong}")
    step("bad_request for a bad room name, then pong on the same connection")

    # Bob goes away; alice sees him leave.
    since = dict(bob.positions[ROOM])
    await bob.close()
    leave = await alice.next_delivery("leave")
    expect(leave["client"] == bob.id, f"leave about bob: {leave}")
    step(f"leave event; bob's last position {since}")

    # Meanwhile: two publishes over WebSocket, one through the HTTP API.
    missed = []
    for n in (2, 3):
        ok = await alice.command("publish", room=ROOM, data={"n": n})
        missed.append(ok["offset"])
    status, answer = api(api_base, api_key, "POST", "/api/publish", {"room": ROOM, "data": {"n": 4}})
    expect(status == 200, f"HTTP publish answered 200: {status} {answer}")
    expect(answer["room"] == ROOM and answer["epoch"] == since["epoch"], f"HTTP publish: {answer}")
    missed.append(answer["offset"])
    expect(missed == list(range(since["offset"] + 1, since["offset"] + 4)), f"gap-free offsets: {missed}")
    status, answer = api(api_base, "wrong key", "POST", "/api/publish", {"room": ROOM, "data": 0})
    expect(status == 401 and answer["error"] == "unauthorized", f"wrong API key: {status} {answer}")
    step(f"published {missed} while bob was away (the last through the HTTP API)")

    # The HTTP API's history from bob's position holds exactly those.
    status, page = api(
        api_base, api_key, "GET",
        f"/api/rooms/{ROOM}/history?since_offset={since['offset']}&epoch={since['epoch']}",
    )
    expect(status == 200 and page["recovered"] is True, f"HTTP history: {status} {page}")
    expect([m["offset"] for m in page["messages"]] == missed, f"HTTP history offsets: {page}")
    step("HTTP history since bob's position")

    # Bob reconnects and recovers with `since`: the ok, then the replay in order, then live.
    bob = await Client.connect(url)
    ok = await bob.subscribe(ROOM, since=since)
    expect(ok["recovered"] is True, f"recovered: {ok}")
    expect(ok["offset"] == missed[-1], f"ok reports the latest offset: {ok}")
    replay = [await bob.next_delivery("message") for _ in missed]
    expect([m["offset"] for m in replay] == missed, f"replayed in order: {replay}")
    expect([m["data"] for m in replay] == [{"n": 2}, {"n": 3}, {"n": 4}], f"replayed data: {replay}")
    expect(replay[-1]["from"] is None, f"from is null through the HTTP API: {replay[-1]}")
    ok = await alice.command("publish", room=ROOM, data={"n": 5})
    live = await bob.next_delivery("message")
    expect(live["offset"] == ok["offset"] == missed[-1] + 1, f"live after replay, no gap: {live}")
    step("reconnect with since: recovered the 3 missed messages, then live, no gap")

    # A position from a history that is gone is answered with recovered: false.
    carol = await Client.connect(url)
    ok = await carol.subscribe(ROOM, since={"epoch": "not-" + since["epoch"], "offset": 1})
    expect(ok["recovered"] is False, f"unknown epoch: recovered false: {ok}")
    # What was lost, exactly: the rest of that epoch after offset 1 (it ended: no `to`). The
    # room's whole history is replayed from offset 1, so nothing of its epoch is lost.
    expect(ok.get("lost") == [{"epoch": "not-" + since["epoch"], "from": 2}], f"lost: {ok}")
    step("unknown epoch: recovered false, lost names the rest of that epoch")

    # send reaches one connection; an unknown id is not_found.
    await carol.command("send", to=bob.id, data={"psst": True})
    direct = await bob.next_delivery("direct")
    expect(direct == {"type": "direct", "from": carol.id, "data": {"psst": True}}, f"direct: {direct}")
    try:
        await carol.command("send", to="000000000000-0", data=1)
        raise CheckFailed("a send to an unknown connection fails")
    except ServerError as error:
        expect(error.code == "not_found", f"unknown recipient: {error}")
    step("send, and not_found for an unknown connection")

    # The HTTP API closes a connection with 1000.
    status, answer = api(api_base, api_key, "POST", "/api/disconnect", {"client": carol.id})
    expect(status == 200 and answer == {}, f"HTTP disconnect: {status} {answer}")
    await asyncio.wait_for(carol.reader, TIMEOUT)
    expect(carol.ws.close_code == 1000, f"closed with 1000: {carol.ws.close_code}")
    step("HTTP disconnect closes with 1000")

    # A binary frame closes the connection with 1003.
    await bob.ws.send(b"\x00")
    await asyncio.wait_for(bob.reader, TIMEOUT)
    expect(bob.ws.close_code == 1003, f"binary frame: closed with 1003: {bob.ws.close_code}")
    step("binary frame closes with 1003")

    await alice.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8080/ws")
    parser.add_argument("--api", default="http://127.0.0.1:8080")
    parser.add_argument("--api-key", required=True)
    args = parser.parse_args()
    passed = []
    try:
        asyncio.run(check(args.url, args.api.rstrip("/"), args.api_key, passed))
    except (CheckFailed, ServerError, asyncio.TimeoutError, OSError, websockets.WebSocketException) as error:
        print(f"FAILED after step {len(passed)}: {type(error).__name__}: {error}", file=sys.stderr)
        print(f"{len(passed)} passed, 1 failed")
        return 1
    print(f"{len(passed)} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
