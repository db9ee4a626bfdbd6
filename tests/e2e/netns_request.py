"""HTTPS requests from inside another network namespace (a test container's), run by nsenter.

    nsenter --net=/proc/<pid>/ns/net python3 netns_request.py < request.json

Only the network namespace changes: this script, the interpreter and the CA file stay the
host's, so a container that holds nothing but `sleep` can act as a client on its network.
Standard library only. Input (JSON on stdin): address, port, server_name, ca_pem and a
list of requests (method, path, headers); output (JSON on stdout): one answer per request
with status, lower-cased headers and the body as text.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import sys
from typing import Any


def _connect(spec: dict[str, Any]) -> ssl.SSLSocket:
    context = ssl.create_default_context(cadata=spec["ca_pem"])
    raw = socket.create_connection((spec["address"], int(spec["port"])), timeout=15)
    # The certificate is checked for the registry's name while the socket goes to an address.
    return context.wrap_socket(raw, server_hostname=spec["server_name"])


def _send(connection: ssl.SSLSocket, host: str, request: dict[str, Any]) -> dict[str, Any]:
    headers = {"Host": host, "Connection": "close", **request.get("headers", {})}
    head = [f"{request.get('method', 'GET')} {request['path']} HTTP/1.1"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    connection.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    answer = http.client.HTTPResponse(connection)  # type: ignore[arg-type]
    answer.begin()
    body = answer.read()
    return {
        "status": answer.status,
        "headers": {name.lower(): value for name, value in answer.getheaders()},
        "body": body.decode(errors="replace"),
    }


def main() -> None:
    spec = json.load(sys.stdin)
    host = f"{spec['server_name']}:{spec['port']}"
    answers = []
    for request in spec["requests"]:
        with _connect(spec) as connection:
            answers.append(_send(connection, host, request))
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    main()
