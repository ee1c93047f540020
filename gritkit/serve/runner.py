"""Run the server on a background thread: for notebooks, tests and benchmarks.

    with ServerThread(create_app(model, ServeConfig())) as url:
        OpenAI(base_url=url + "/v1", api_key="-").embeddings.create(model="gritkit", input="hi")
"""

from __future__ import annotations

import socket
import threading
import time


class ServerThread:
    """uvicorn serving ``app`` on ``host`` at a free port chosen by the OS, until the block ends."""

    def __init__(self, app, host: str = "127.0.0.1", log_level: str = "warning"):
        import uvicorn

        self.host = host
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=0, log_level=log_level, lifespan="on"))
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> str:
        # Binding the socket here (port 0) avoids the race of picking a port and binding it later.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((self.host, 0))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]},
                                        name="gritkit-uvicorn", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server thread failed to start")
            time.sleep(0.01)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)
        self._socket.close()
