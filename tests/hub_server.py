"""A Hub on 127.0.0.1 for the tests: model repositories at one commit each, served the way the
Hub serves downloads to huggingface_hub (``HF_ENDPOINT``): the revision's info with its file
list, the file tree, and ``resolve`` with the commit, ETag and size headers, HEAD and GET,
byte ranges. It records every request, and answers the Hub's own error codes for an unknown
repository, an unknown revision and a gated one."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


@dataclass
class Repository:
    repo_id: str
    commit: str
    folder: Path
    gated: bool = False

    def files(self) -> list[str]:
        return sorted(
            str(p.relative_to(self.folder)) for p in self.folder.rglob("*") if p.is_file()
        )


@dataclass
class HubServer:
    repos: dict[str, Repository]
    #: (method, path, the Authorization header that came with it)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    url: str = ""
    #: uploads: the repositories created (id, private), and each commit's files
    created: list[tuple[str, bool]] = field(default_factory=list)
    commits: list[tuple[str, dict[str, bytes]]] = field(default_factory=list)
    #: each commit's message
    messages: list[str] = field(default_factory=list)
    #: refuse every upload, as the Hub does a token without write access
    read_only: bool = False
    #: called with a file's name before its bytes are sent in full (not for a range); an HTTP
    #: status it returns is answered instead
    before_sending: Callable[[str], int | None] | None = None

    def __enter__(self) -> HubServer:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self.answer(body=False)

            def do_GET(self) -> None:
                self.answer(body=True)

            def do_POST(self) -> None:
                # Uploads as huggingface_hub makes them: create the repository, ask how each
                # file goes (all as regular files here, inside the commit), commit.
                path = unquote(urlparse(self.path).path)
                hub.requests.append(("POST", path, self.headers.get("Authorization")))
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if hub.read_only and path != "/api/validate-yaml":
                    return self.error(403, "Forbidden", "You don't have the rights")
                if path == "/api/repos/create":
                    asked = json.loads(data)
                    repo_id = f"{asked['organization']}/{asked['name']}"
                    if asked.get("organization") is None:
                        repo_id = asked["name"]
                    private = asked.get("visibility") == "private" or bool(asked.get("private"))
                    hub.created.append((repo_id, private))
                    return self.json({"url": f"{hub.url}/{repo_id}", "name": repo_id}, True)
                if path == "/api/validate-yaml":
                    return self.json({"errors": [], "warnings": []}, True)
                preupload = re.match(r"^/api/models/(.+)/preupload/([^/]+)$", path)
                if preupload:
                    files = json.loads(data)["files"]
                    modes = [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                        for f in files
                    ]
                    return self.json({"files": modes}, True)
                commit = re.match(r"^/api/models/(.+)/commit/([^/]+)$", path)
                if commit:
                    files = {}
                    for line in data.decode().splitlines():
                        entry = json.loads(line)
                        if entry.get("key") == "header":
                            hub.messages.append(entry["value"].get("summary", ""))
                        if entry.get("key") == "file":
                            value = entry["value"]
                            files[value["path"]] = base64.b64decode(value["content"])
                    hub.commits.append((commit.group(1), files))
                    oid = hashlib.sha1(repr(sorted(files)).encode()).hexdigest()
                    url = f"{hub.url}/{commit.group(1)}/commit/{oid}"
                    return self.json({"commitUrl": url, "commitOid": oid}, True)
                return self.error(404, "EntryNotFound", "no such route")

            def json(self, value: object, body: bool) -> None:
                data = json.dumps(value).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def error(self, status: int, code: str, message: str) -> None:
                data = json.dumps({"error": message}).encode()
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def answer(self, body: bool) -> None:
                path = unquote(urlparse(self.path).path)
                hub.requests.append((self.command, path, self.headers.get("Authorization")))
                info = re.match(r"^/api/models/([^/]+/[^/]+)(?:/revision/(.+))?$", path)
                tree = re.match(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/.*)?$", path)
                resolve = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
                if tree:
                    info = None
                match = tree or info or resolve
                if not match:
                    return self.error(404, "EntryNotFound", "no such route")
                repo = hub.repos.get(match.group(1))
                if repo is None:
                    return self.error(404, "RepoNotFound", "Repository not found")
                if repo.gated:
                    return self.error(403, "GatedRepo", "Access to this model is restricted")
                revision = match.group(2) or "main"
                if revision not in ("main", repo.commit):
                    return self.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                if tree:
                    entries = []
                    for f in repo.files():
                        data = (repo.folder / f).read_bytes()
                        oid = hashlib.sha256(data).hexdigest()
                        entry = {"type": "file", "path": f, "size": len(data), "oid": oid}
                        if f.endswith(".safetensors"):
                            entry["lfs"] = {"oid": oid, "size": len(data), "pointerSize": 134}
                        entries.append(entry)
                    return self.json(entries, body)
                if info:
                    siblings = [{"rfilename": f} for f in repo.files()]
                    info = {"id": repo.repo_id, "sha": repo.commit, "siblings": siblings}
                    return self.json(info, body)
                file = repo.folder / match.group(3)
                if not file.is_file():
                    return self.error(404, "EntryNotFound", "Entry not found")
                data = file.read_bytes()
                start, end = 0, len(data)
                ranged = re.match(r"bytes=(\d+)-(\d*)$", self.headers.get("Range", ""))
                if ranged:
                    start = int(ranged.group(1))
                    if ranged.group(2):
                        end = min(int(ranged.group(2)) + 1, len(data))
                elif body and hub.before_sending is not None:
                    status = hub.before_sending(match.group(3))
                    if status is not None:
                        return self.error(status, "Refused", "refused by the test")
                self.send_response(206 if ranged else 200)
                self.send_header("X-Repo-Commit", repo.commit)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Accept-Ranges", "bytes")
                if ranged:
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
                self.send_header("Content-Length", str(end - start))
                self.end_headers()
                if body:
                    self.wfile.write(data[start:end])
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def fetched(self) -> list[str]:
        """The files whose bytes were sent (GET of a resolve route)."""
        return sorted(
            {
                path.split("/resolve/", 1)[1].split("/", 1)[1]
                for method, path, _ in self.requests
                if method == "GET" and "/resolve/" in path
            }
        )
