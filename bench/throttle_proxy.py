"""A TCP proxy whose downstream direction shares one fixed bandwidth: a slow WAN link.

    python3 throttle_proxy.py --listen-port 5000 --target 172.18.0.2:5000 --rate 10000000

bench/run.py starts it with nsenter inside a `sleep` container's network namespace, so it
listens on that container's address on the stack network (the cache dials it by network
alias) and behind the port the container publishes on 127.0.0.1 (the bench pulls from it
directly). Standard library only: it runs on the host's interpreter.

Every connection draws from one shared budget of `rate` bytes per second (upstream to
client), in FIFO order of chunks, like packets queued on one link. nginx's `limit_rate`
limits each request separately instead: N parallel fetches would each get the full rate,
and the cost of a cache fetching the same blob several times would not show in any time.
Requests towards the upstream are small and pass unthrottled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time

CHUNK = 64 * 1024


class Link:
    """One shared transmission timeline: each chunk reserves the next free slot on it."""

    def __init__(self, bytes_per_second: float) -> None:
        self.rate = bytes_per_second
        self.free_at = time.monotonic()
        self.bytes_sent = 0

    async def transmit(self, size: int) -> None:
        now = time.monotonic()
        self.free_at = max(now, self.free_at) + size / self.rate
        self.bytes_sent += size
        await asyncio.sleep(self.free_at - now)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, link: Link | None) -> None:
    try:
        while chunk := await source.read(CHUNK):
            if link is not None:
                await link.transmit(len(chunk))
            sink.write(chunk)
            await sink.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if sink.can_write_eof():
                sink.write_eof()


async def _serve_connection(
    client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter, target: tuple[str, int], link: Link
) -> None:
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection(*target)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(
        _pipe(client_reader, upstream_writer, None),
        _pipe(upstream_reader, client_writer, link),
    )
    for writer in (client_writer, upstream_writer):
        writer.close()


async def _main(listen_port: int, target: tuple[str, int], rate: float) -> None:
    link = Link(rate)
    server = await asyncio.start_server(
        lambda reader, writer: _serve_connection(reader, writer, target, link), "0.0.0.0", listen_port
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"throttle_proxy: :{listen_port} -> {target[0]}:{target[1]} at {rate:.0f} B/s", file=sys.stderr, flush=True)
    async with server:
        await stop.wait()
        # Connections still open (idle keep-alives of the cache) end with the proxy.
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()
    print(f"throttle_proxy: {link.bytes_sent} bytes sent downstream", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--target", required=True, help="host:port of the real upstream")
    parser.add_argument("--rate", type=float, required=True, help="bytes per second, shared by all connections")
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    asyncio.run(_main(args.listen_port, (host, int(port)), args.rate))


if __name__ == "__main__":
    main()
