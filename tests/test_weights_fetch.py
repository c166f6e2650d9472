"""`privaudit weights fetch` against a loopback HTTP server (never the internet): the file lands where
evaluate looks, or, on any failure (hash mismatch, 404, refused connection, a pickle that would run
code, wrong tensors, an unwritable destination), exit 2 in one line and nothing is left behind."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from privaudit.cli.app import app
from privaudit.errors import InputError, WeightsError
from privaudit.evaluation.fetch import INCEPTION_WEIGHTS_SHA256, fetch_inception_weights
from privaudit.evaluation.inception import INCEPTION_WEIGHTS_FILENAME, WEIGHTS_ENV, hub_weights_path, resolve_inception_weights

try:
    from tests.inception_helpers import make_random_inception_weights
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from inception_helpers import make_random_inception_weights


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A loopback HTTP server over a folder: weights.pth (random Inception weights), evil.pth (a pickle
    that creates a marker file when unpickled), shapes.pth (a tensor dict of the wrong keys).
    Yields (base_url, files, marker, requests) where ``requests`` lists the paths asked for."""
    root = tmp_path_factory.mktemp("served")
    make_random_inception_weights(root / "weights.pth", batches=1, batch_size=2)
    marker = root / "PWNED"
    torch.save({"Conv2d_1a_3x3.conv.weight": _Evil(marker)}, root / "evil.pth")
    torch.save({"not_inception.weight": torch.zeros(3)}, root / "shapes.pth")
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    files = {name: (root / name).read_bytes() for name in ("weights.pth", "evil.pth", "shapes.pth")}
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", files, marker, requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty $TORCH_HOME (so the hub folder evaluate looks in is under tmp_path) and no weights env."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    return home


def fetch(*args: str):
    return CliRunner().invoke(app, ["weights", "fetch", *args])


def _one_line_exit_2(result, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("privaudit: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_pinned_hash_follows_the_file_name_convention():
    # torch hub names a file after the first 8 hex digits of its SHA-256
    assert INCEPTION_WEIGHTS_FILENAME == f"weights-inception-2015-12-05-{INCEPTION_WEIGHTS_SHA256[:8]}.pth"
    assert len(INCEPTION_WEIGHTS_SHA256) == 64 and int(INCEPTION_WEIGHTS_SHA256, 16) >= 0


def test_fetch_puts_the_file_where_evaluate_looks(server, torch_home):
    base, files, _, requests = server
    with pytest.raises(WeightsError, match="privaudit weights fetch"):
        resolve_inception_weights(None)  # before: missing, and the message says how to fetch it
    before = len(requests)
    r = fetch("--url", f"{base}/weights.pth", "--sha256", _sha(files["weights.pth"]))
    assert r.exit_code == 0, r.output
    dest = torch_home / "hub" / "checkpoints" / INCEPTION_WEIGHTS_FILENAME
    assert hub_weights_path() == dest
    assert dest.read_bytes() == files["weights.pth"]
    assert resolve_inception_weights(None) == dest  # evaluate would find it
    assert sorted(p.name for p in dest.parent.iterdir()) == [INCEPTION_WEIGHTS_FILENAME]  # no temporary left
    assert requests[before:] == ["/weights.pth"]
    assert f"wrote {dest}" in r.stderr.replace("\n", "")

    # again: the file is there with the right hash, nothing is downloaded
    again = fetch("--url", f"{base}/weights.pth", "--sha256", _sha(files["weights.pth"]))
    assert again.exit_code == 0, again.output
    assert "already there" in again.stderr and len(requests) == before + 1


def test_library_fetch_to_dest_reports_progress_and_replaces_a_corrupt_file(server, tmp_path):
    base, files, _, _ = server
    dest = tmp_path / "w.pth"
    dest.write_bytes(b"a truncated download")
    seen: list[tuple[int, int | None]] = []
    result = fetch_inception_weights(url=f"{base}/weights.pth", dest=dest, sha256=_sha(files["weights.pth"]).upper(),
                                     timeout=10, on_progress=lambda done, total: seen.append((done, total)))
    size = len(files["weights.pth"])
    assert (result.path, result.size, result.downloaded, result.sha256) == (dest, size, True, _sha(files["weights.pth"]))
    assert dest.read_bytes() == files["weights.pth"]
    assert seen[0] == (0, size) and seen[-1] == (size, size)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pth"]


def test_hash_mismatch_leaves_nothing(server, torch_home):
    base, files, _, _ = server
    r = fetch("--url", f"{base}/weights.pth", "--sha256", "0" * 64)
    line = _one_line_exit_2(r, "SHA-256", _sha(files["weights.pth"]), "expected " + "0" * 64, "nothing was written")
    assert base in line
    assert not torch_home.exists()  # not even the folders made for the file


def test_default_pin_refuses_any_other_file(server, torch_home):
    base, _, _, _ = server
    r = fetch("--url", f"{base}/weights.pth")  # a random Inception file is not torch-fidelity's
    _one_line_exit_2(r, "SHA-256", f"expected {INCEPTION_WEIGHTS_SHA256}")
    assert not torch_home.exists()


def test_http_404(server, torch_home):
    base, _, _, _ = server
    _one_line_exit_2(fetch("--url", f"{base}/missing.pth", "--sha256", "0" * 64), "HTTP 404", "--url")
    assert not torch_home.exists()


def test_connection_refused(torch_home):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    line = _one_line_exit_2(fetch("--url", f"http://127.0.0.1:{port}/w.pth", "--timeout", "5"), "refused", "--inception-weights FILE")
    assert f"127.0.0.1:{port}" in line
    assert not torch_home.exists()


def test_a_pickle_that_would_run_code_is_refused(server, torch_home):
    base, files, marker, _ = server
    r = fetch("--url", f"{base}/evil.pth", "--sha256", _sha(files["evil.pth"]))  # the hash matches: vetting must refuse
    _one_line_exit_2(r, "refusing", f"downloaded from {base}/evil.pth", "nothing was written")
    assert not marker.exists()
    assert not torch_home.exists()


def test_tensors_of_another_network_are_refused(server, torch_home):
    base, files, _, _ = server
    r = fetch("--url", f"{base}/shapes.pth", "--sha256", _sha(files["shapes.pth"]))
    _one_line_exit_2(r, "do not fit torch-fidelity's InceptionV3", "not_inception.weight")
    assert not torch_home.exists()


def test_unwritable_destination_is_refused_before_downloading(server, tmp_path, torch_home):
    base, files, _, requests = server
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    before = len(requests)
    r = fetch("--url", f"{base}/weights.pth", "--sha256", _sha(files["weights.pth"]), "--dest", str(blocker / "w.pth"))
    _one_line_exit_2(r, "a_file")
    assert len(requests) == before  # nothing was downloaded
    assert blocker.read_text() == "not a folder"
    folder = tmp_path / "dest_dir"
    folder.mkdir()
    _one_line_exit_2(fetch("--url", f"{base}/weights.pth", "--dest", str(folder)), "is a folder")
    assert list(folder.iterdir()) == [] and len(requests) == before


@pytest.mark.parametrize("kwargs, needle", [
    ({"url": "ftp://example.org/w.pth"}, "--url must be an http:// or https:// address"),
    ({"url": "file:///etc/passwd"}, "--url must be"),
    ({"url": "not a url"}, "--url must be"),
    ({"sha256": "6726825d"}, "--sha256 must be 64 hexadecimal digits"),
    ({"timeout": 0}, "--timeout must be a positive number"),
])
def test_bad_arguments_are_input_errors(tmp_path, kwargs, needle):
    with pytest.raises(InputError, match=needle):
        fetch_inception_weights(dest=tmp_path / "w.pth", **kwargs)
    assert list(tmp_path.iterdir()) == []
