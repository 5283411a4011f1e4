"""Property tests of the HTTP API against a real `hub serve`, with hypothesis.

Two boundaries the black-box probe found weak: the folder browser under hostile paths, and
project names with control, bidirectional-override, zero-width and non-Latin characters.
Run by `scripts/test.sh` after schemathesis (HUB_BIN names the binary).
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import tempfile
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# No example database in the checkout: every run explores afresh.
settings.register_profile("hub", database=None)
settings.load_profile("hub")

FORBIDDEN_IN_NAMES = {0x061C, 0xFEFF} | set(range(0x200B, 0x2010)) | set(range(0x202A, 0x202F)) \
    | set(range(0x2060, 0x2065)) | set(range(0x2066, 0x206A)) | set(range(0xFFF9, 0xFFFC))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Hub:
    def __init__(self, base: str, root: pathlib.Path, outside: pathlib.Path) -> None:
        self.base, self.root, self.outside = base, root, outside

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    binary = os.environ.get("HUB_BIN", "target/debug/hub")
    with tempfile.TemporaryDirectory() as tmp:
        base = pathlib.Path(tmp).resolve()
        root = base / "root"
        (root / "sub" / "deeper").mkdir(parents=True)
        (root / "file.txt").write_text("x")
        (root / "loop-a").symlink_to("loop-b")
        (root / "loop-b").symlink_to("loop-a")
        outside = base / "outside"
        outside.mkdir()
        (outside / "secretfile").write_text("x")
        (root / "escape").symlink_to(outside)
        port = _free_port()
        server = subprocess.Popen(
            [binary, "serve", "--bind", f"127.0.0.1:{port}", "--data-dir", str(base / "state"),
             "--browse-root", str(root), "--docker-host", "unix:///nonexistent/docker.sock"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        try:
            yield Hub(url, root, outside)
        finally:
            server.terminate()
            server.wait(timeout=10)


SEGMENTS = st.one_of(
    st.sampled_from(["..", ".", "sub", "deeper", "file.txt", "loop-a", "escape", "secretfile",
                     "nofile", "etc", "shadow", "", "\x00", "a" * 300]),
    st.text(min_size=1, max_size=12),
)


def _is_error_shape(body: Any) -> bool:
    return isinstance(body, dict) and isinstance(body.get("error"), dict) \
        and isinstance(body["error"].get("code"), str) and isinstance(body.get("detail"), str)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=st.sampled_from(["root", "outside", "/"]), segments=st.lists(SEGMENTS, max_size=8),
       repeat=st.integers(min_value=1, max_value=3))
def test_the_folder_browser_answers_hostile_paths_with_4xx_and_no_oracle(
    hub: Hub, start: str, segments: list[str], repeat: int
) -> None:
    base = {"root": str(hub.root), "outside": str(hub.outside), "/": ""}[start]
    path = base + "/" + "/".join(segments * repeat)
    status, body = hub.call("GET", "/api/filesystem/browse?path=" + urllib.parse.quote(path, safe="/"))
    assert status in (200, 400, 403, 404, 422), (path, status, body)
    if status != 200:
        assert _is_error_shape(body), (path, body)
        return
    # What is listed lies inside the root, whatever the path went through.
    assert body["currentPath"].startswith(str(hub.root)), (path, body)
    assert all(d["path"].startswith(str(hub.root)) for d in body["directories"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=st.sampled_from(["outside"]), tail=st.lists(SEGMENTS, max_size=4))
def test_outside_the_roots_every_answer_is_the_same_403(hub: Hub, start: str, tail: list[str]) -> None:
    # Anything under the outside folder, existing or not, file or folder: 403, nothing more.
    path = str(hub.outside) + "/" + "/".join(s for s in tail if s not in ("..", ".") and "/" not in s)
    status, body = hub.call("GET", "/api/filesystem/browse?path=" + urllib.parse.quote(path, safe="/"))
    # Refused on its face (a NUL, too long), whatever exists: no oracle either.
    if "\x00" in path or len(path.encode()) > 4096:
        assert status == 400, (path, status)
        return
    if any(len(s.encode()) > 255 for s in path.split("/")):
        assert status in (400, 403), (path, status)
        return
    assert status == 403, (path, status, body)
    assert body["error"]["code"] == "forbidden"


NAMES = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8", exclude_categories=["Cs"]),
        st.sampled_from(["\u202e", "\u200b", "\u200d", "\x1b", "\x00", "\n", "日", "🚀", "Ω"]),
    ),
    min_size=0,
    max_size=40,
)


# The White_Space characters Rust's `str::trim` removes (Python's `strip` removes more).
RUST_WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200B)) \
    + "\u2028\u2029\u202f\u205f\u3000"


def _acceptable(name: str) -> bool:
    trimmed = name.strip(RUST_WHITESPACE)
    if not trimmed or len(trimmed) > 255:
        return False
    return not any(unicodedata.category(c) == "Cc" or ord(c) in FORBIDDEN_IN_NAMES for c in trimmed)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES)
def test_names_in_any_script_are_accepted_and_deceptive_ones_refused(hub: Hub, name: str) -> None:
    folder = hub.root / "names"
    folder.mkdir(exist_ok=True)
    status, body = hub.call("POST", "/api/projects", {"name": name, "path": str(folder)})
    if _acceptable(name):
        assert status in (201, 409), (name, status, body)
        if status == 201:
            assert body["slug"] and body["slug"] == body["slug"].lower()
            assert all(c.isascii() and (c.isalnum() or c == "-") for c in body["slug"])
            found_status, found = hub.call("GET", "/api/projects/" + urllib.parse.quote(body["slug"].upper()))
            assert found_status == 200 and found["id"] == body["id"], "slug lookup ignores case"
            assert hub.call("DELETE", f"/api/projects/{body['id']}")[0] in (200, 204)
    else:
        assert status == 422, (name, status, body)
        assert body["error"]["field"] == "name", body
