"""A TCP relay on 127.0.0.1, in a process of its own, in front of a real server: the address a
test gives sigen, so that `kill -9` of the relay is, for sigen, the server going away (the
connections of the requests in flight reset, new ones refused), and starting it again on the same
port brings the server back, while the real server behind it, which other tests share, runs on."""

from __future__ import annotations

import subprocess
import sys

from selfinstruct_local.engines.server import free_port

RELAY = """
import asyncio, sys

LISTEN, TARGET = int(sys.argv[1]), int(sys.argv[2])


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def relay(client_reader, client_writer):
    try:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", TARGET)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))


async def main():
    server = await asyncio.start_server(relay, "127.0.0.1", LISTEN)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
"""


class Relay:
    """`with Relay(port) as relay:` relays relay.url (an API root, ending in /v1) to the server
    on `port` of 127.0.0.1 until `kill()` or the end of the block; `start()` again after a
    kill listens on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> Relay:
        self.process = subprocess.Popen(
            [sys.executable, "-c", RELAY, str(self.port), str(self.target_port)],
            stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline().strip() == "ready"
        return self

    def kill(self) -> None:
        """SIGKILL, as a server killed outright."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process.stdout.close()
            self.process = None

    def __enter__(self) -> Relay:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.kill()
