"""``leansam serve`` as a command: a real uvicorn process, raw HTTP paths, and start-up errors."""

from __future__ import annotations

import http.client
import json
import socket
from urllib.parse import urlsplit

import pytest

from leansam import serve
from leansam.cli import main
from tests.serve.conftest import EXAMPLE, free_port


def raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (no client-side normalisation of ``..`` or escapes)."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.putrequest("GET", path, skip_host=False, skip_accept_encoding=True)
    conn.endheaders()
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/folder/../outside/secret.txt", 403),
        ("/api/folder/sub/../../outside/secret.png", 403),
        ("/api/folder/..%2f..%2foutside%2fsecret.txt", 403),
        ("/api/folder/%2e%2e%2foutside%2fsecret.txt", 403),
        ("/api/folder/%252e%252e%252foutside%252fsecret.txt", 404),
        ("/api/folder//etc/passwd", 403),
        ("/api/folder/linkdir/secret.txt", 403),
        ("/api/folder/sub/copy.jpg", 200),
    ],
)
def test_raw_paths_confined(server, path, status):
    code, body = raw_get(server, path)
    assert code == status, body
    assert b"top secret" not in body
    if status == 200:
        assert body == EXAMPLE.read_bytes()
    assert raw_get(server, "/api/folder")[0] == 200  # still serving


def test_serves_page_and_docs_on_loopback(server):
    assert urlsplit(server).hostname == "127.0.0.1"
    code, body = raw_get(server, "/")
    assert code == 200 and b'id="mask-canvas"' in body
    assert raw_get(server, "/static/app.js")[0] == 200
    assert raw_get(server, "/static/../pyproject.toml")[0] == 404
    assert raw_get(server, "/docs")[0] == 200
    models = json.loads(raw_get(server, "/api/models")[1])
    assert models["default"] == "leansam_tiny" and models["loaded"] == ["leansam_tiny"]


def test_startup_errors(tmp_path, capsys):
    assert main(["serve", "--model", "no_such_model"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown model")
    assert main(["serve", "--images", str(tmp_path / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert main(["serve", "--port", str(s.getsockname()[1])]) == 2
        assert "cannot listen" in capsys.readouterr().err
    assert main(["serve", "--port", "70000"]) == 2
    assert free_port() > 0


def test_missing_extra_names_install_command(monkeypatch, capsys):
    monkeypatch.setitem(serve._DEPS, "leansam_no_such_module", "fastapi")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err == "error: leansam serve needs fastapi: pip install 'leansam[serve]'\n"
