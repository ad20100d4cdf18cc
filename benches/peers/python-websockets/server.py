"""A broadcast hub with Python's `websockets`, as its documentation shows: every text message
from any client goes to every connected client through `websockets.broadcast`.

Usage: python server.py 127.0.0.1:8080   (serves ws://127.0.0.1:8080/ws)
"""

import asyncio
import sys

from websockets.asyncio.server import broadcast, serve

CONNECTIONS = set()


async def handler(websocket):
    if websocket.request.path != "/ws":
        await websocket.close(1008, "not found")
        return
    CONNECTIONS.add(websocket)
    try:
        async for message in websocket:
            broadcast(CONNECTIONS, message)
    finally:
        CONNECTIONS.discard(websocket)


async def main(addr):
    host, _, port = addr.rpartition(":")
    async with serve(handler, host, int(port)) as server:
        print(f"python-websockets listening on ws://{addr}/ws", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8080"))
