"""``python -m inference`` (``sparsetune serve``): one inference process — the engine, its internal HTTP app
(inference/server.py) on SPARSETUNE_INFERENCE_HOST:PORT, and a heartbeat that tells the API where it is.

Port 0 binds a free port first, so the address the heartbeat advertises is the one actually served. Models
load lazily, on the first request that needs them. SIGINT/SIGTERM stop it warmly: the server stops taking
requests, the heartbeat says ``stopped``, the engine ends. Started by `sparsetune up`
(SPARSETUNE_EXIT_WITH_PARENT=1), it also stops when `up` dies.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
import time

from service import logs, private
from service.devices import detect_device
from service.heap import tune_for_serving
from service.parent import exit_with_parent
from service.periodic import Periodic
from service.settings import Settings, get_settings

log = logging.getLogger("sparsetune.inference")
WILDCARDS = ("0.0.0.0", "::", "")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (port 0: the OS picks a free one), handed to uvicorn."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def advertised(settings: Settings, host: str, port: int) -> str:
    """The base URL the API is to use: SPARSETUNE_INFERENCE_ADVERTISE_URL, else the bound address (this
    machine's name when bound to every interface, which other machines may or may not resolve: say so)."""
    if settings.inference_advertise_url:
        return settings.inference_advertise_url
    if host in WILDCARDS:
        log.warning("listening on every interface: advertising %s; set SPARSETUNE_INFERENCE_ADVERTISE_URL if the "
                    "API cannot reach that name", socket.gethostname())
        host = socket.gethostname()
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"http://{host}:{port}"


def memory_budget(settings: Settings, device_memory: int | None) -> int | None:
    """SPARSETUNE_INFERENCE_MEMORY, else half the device's memory (the rest for activations, the KV cache
    and, on a CPU, everything else the machine runs)."""
    return settings.inference_memory or (device_memory // 2 if device_memory else None)


def serve(host: str, port: int) -> int:
    import uvicorn

    from inference import adapters
    from inference.engine import Engine
    from inference.heartbeat import Heartbeat
    from inference.server import create_app

    settings = get_settings()
    device = detect_device()
    engine = Engine(memory_budget(settings, device[1]))
    sock = bind(host, port)
    address = advertised(settings, host, sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(create_app(engine, settings.inference_secret()), log_level="warning",
                                           access_log=False, timeout_graceful_shutdown=5, lifespan="off"))
    heartbeat = Heartbeat(address, engine.held_models, engine.load, device)
    sweeper = Periodic("adapter-sweep", adapters.sweep, lambda: settings.reconcile_seconds)
    engine.start()
    sweeper.start()
    threading.Thread(target=_announce, args=(server, heartbeat, address), daemon=True).start()
    # uvicorn stops warmly on SIGINT/SIGTERM, then re-raises the signal into the handler it found: make that
    # a no-op, so the heartbeat and the engine are stopped below
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    tune_for_serving()  # torch and the app: out of the collector's walks (service/heap.py)
    try:
        server.run(sockets=[sock])
    finally:
        sweeper.stop()
        heartbeat.stop()
        engine.stop()
        sock.close()
    return 0


def _announce(server, heartbeat, address: str) -> None:
    """Once the server accepts requests: the first heartbeat (the API may route here from now on), then the
    ready line on stderr."""
    while not server.started and not server.should_exit:
        time.sleep(0.05)
    if server.started:
        heartbeat.start()
        print(f"inference ready on {address}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="sparsetune serve", description="one inference process")
    parser.add_argument("--host", default=settings.inference_host, help="default $SPARSETUNE_INFERENCE_HOST")
    parser.add_argument("--port", type=int, default=settings.inference_port,
                        help="default $SPARSETUNE_INFERENCE_PORT; 0 picks a free port")
    args = parser.parse_args(argv)
    private.restrict_umask()  # adapter copies under home are users' artifacts: 0600
    logs.configure(settings.log_level)
    if os.environ.get("SPARSETUNE_EXIT_WITH_PARENT") == "1":
        exit_with_parent()
    return serve(args.host, args.port)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
