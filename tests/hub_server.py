"""A tiny in-memory stand-in for the Hugging Face Hub HTTP API, for offline tests.

Speaks the subset `huggingface_hub` 2.x uses for `create_repo`, `upload_folder`/`create_commit`,
`model_info`/`repo_info`, `list_repo_tree`, `hf_hub_download`/`from_pretrained`, and `push_to_hub`:

  POST /api/repos/create                              {"name", "organization", "type", "private"|"visibility"}
  POST /api/repos/delete
  POST /api/validate-yaml                             (README.md metadata check before a commit)
  GET  /api/whoami-v2
  GET  /api/agent-harnesses                          (fetched once a day for the user-agent string)
  GET  /api/{type}s/{repo}[/revision/{rev}]           repo info (sha, siblings, tags/cardData from README)
  GET  /api/{type}s/{repo}/tree/{rev}[/{path}]        ?recursive=1
  POST /api/{type}s/{repo}/paths-info/{rev}
  POST /api/{type}s/{repo}/preupload/{rev}            answers uploadMode "regular" for every file, so the
                                                      client never tries LFS or Xet; returns the git oid of
                                                      the stored file so unchanged files are skipped
  POST /api/{type}s/{repo}/commit/{rev}               NDJSON: header, file (base64), deletedFile/Folder
  POST /api/{type}s/{repo}/branch/{branch}
  HEAD/GET /[{type}s/]{repo}/resolve/{rev}/{path}     X-Repo-Commit, ETag (git oid, quoted), Content-Length

Errors carry the `X-Error-Code` header (RepoNotFound, RevisionNotFound, EntryNotFound) that
`hf_raise_for_status` maps to typed exceptions. Writes need an `Authorization: Bearer` header (any token);
private repos are hidden from requests without one. Unknown routes answer 404 and are recorded in
`LocalHub.unhandled` so a test can see what a client version started to need.

Run it by hand with `python tests/hub_server.py [--port N]`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

try:  # only to expose README metadata in repo info; the server works without it
    import yaml
except ImportError:  # pragma: no cover
    yaml = None

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_API = re.compile(
    r"^/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+(?:/[^/]+)?)"
    r"(?:/(?P<action>revision|tree|preupload|commit|paths-info|branch)(?:/(?P<rest>.*))?)?$"
)
_RESOLVE = re.compile(r"^/(?:(?P<type>datasets|spaces)/)?(?P<repo>.+?)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"


def git_oid(data: bytes) -> str:
    """The git blob sha1 of `data` (what the Hub reports as a regular file's oid and ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class Repo:
    """One repository: immutable snapshots keyed by commit oid, and branches pointing at them."""

    repo_id: str
    repo_type: str
    private: bool
    created_at: str = field(default_factory=_now)
    snapshots: dict[str, dict[str, bytes]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    pr_count: int = 0

    def commit(self, parent: str | None, files: dict[str, bytes], message: str) -> str:
        digest = hashlib.sha1(f"{parent}\n{message}\n{time.time_ns()}".encode())
        for path in sorted(files):
            digest.update(f"{path}\0{git_oid(files[path])}\n".encode())
        oid = digest.hexdigest()
        self.snapshots[oid] = files
        return oid

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        matches = [oid for oid in self.snapshots if oid.startswith(revision)] if len(revision) >= 7 else []
        return matches[0] if len(matches) == 1 else None


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects; every reply sets Content-Length
    server: _Server

    # ---- plumbing -------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # silence stderr noise in tests
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False) -> None:
        self.send_response(status)
        headers = {"Content-Type": "application/json", **(headers or {})}
        headers.setdefault("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if body and not head:
            self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.server.hub.requests.append((method, url.path))
        body = self._body() if method in ("POST", "PUT", "DELETE") else b""
        try:
            self.server.hub.route(self, method, url.path, parse_qs(url.query), body)
        except HubError as err:
            headers = {"X-Error-Message": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._send(err.status, b"" if method == "HEAD" else json.dumps({"error": err.message}).encode(),
                       headers, head=method == "HEAD")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: LocalHub


class LocalHub:
    """The in-memory Hub; `start()` serves it on 127.0.0.1 at a free port (`url`)."""

    def __init__(self, user: str = "upvit-tester") -> None:
        self.user = user
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.unhandled: list[tuple[str, str]] = []
        self._lock = threading.RLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("LocalHub is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self, port: int = 0) -> LocalHub:
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.hub = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- helpers for tests ----------------------------------------------------------------------
    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """The files of a repo at a revision (a copy)."""
        repo = self.repos[(repo_type, repo_id)]
        oid = repo.resolve(revision)
        if oid is None:
            raise KeyError(revision)
        return dict(repo.snapshots[oid])

    # ---- routing --------------------------------------------------------------------------------
    def route(self, h: _Handler, method: str, path: str, query: dict[str, list[str]], body: bytes) -> None:
        with self._lock:
            if path == "/api/repos/create" and method == "POST":
                return self._create_repo(h, json.loads(body or b"{}"))
            if path == "/api/repos/delete" and method in ("POST", "DELETE"):
                return self._delete_repo(h, json.loads(body or b"{}"))
            if path == "/api/validate-yaml" and method == "POST":
                return h._json(200, {"errors": [], "warnings": []})
            if path == "/api/agent-harnesses" and method == "GET":  # user-agent telemetry registry
                return h._json(200, {"standardEnvVars": [], "harnesses": {}})
            if path == "/api/whoami-v2" and method == "GET":
                self._require_auth(h)
                return h._json(200, {"type": "user", "name": self.user, "fullname": self.user, "orgs": [],
                                     "auth": {"type": "access_token", "accessToken": {"role": "write"}}})
            match = _API.match(path)
            if match:
                return self._api(h, method, match, query, body)
            match = _RESOLVE.match(path)
            if match and method in ("GET", "HEAD"):
                return self._resolve(h, method, match)
            self.unhandled.append((method, path))
            raise HubError(404, f"local hub: no route for {method} {path}")

    def _require_auth(self, h: _Handler) -> None:
        if not h.headers.get("Authorization", "").startswith("Bearer "):
            raise HubError(401, "Invalid credentials in Authorization header")

    def _repo(self, h: _Handler, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, unquote(repo_id)))
        if repo is None or (repo.private and not h.headers.get("Authorization")):
            raise HubError(404, f"Repository Not Found for {repo_type} {repo_id}", "RepoNotFound")
        return repo

    def _revision(self, repo: Repo, revision: str) -> str:
        oid = repo.resolve(unquote(revision))
        if oid is None:
            raise HubError(404, f"Invalid rev id: {unquote(revision)}", "RevisionNotFound")
        return oid

    # ---- repos ----------------------------------------------------------------------------------
    def _create_repo(self, h: _Handler, payload: dict[str, Any]) -> None:
        self._require_auth(h)
        namespace = payload.get("organization") or self.user
        repo_id = f"{namespace}/{payload['name']}"
        repo_type = payload.get("type") or "model"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.url}/{prefix}{repo_id}"
        if (repo_type, repo_id) in self.repos:
            # create_repo(exist_ok=True) swallows the 409 but still reads "url" from this body.
            return h._json(409, {"error": "You already created this model repo", "url": url})
        private = bool(payload.get("private")) or payload.get("visibility") == "private"
        repo = Repo(repo_id, repo_type, private)
        repo.branches["main"] = repo.commit(None, {".gitattributes": _GITATTRIBUTES}, "initial commit")
        self.repos[(repo_type, repo_id)] = repo
        h._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self, h: _Handler, payload: dict[str, Any]) -> None:
        self._require_auth(h)
        repo_id = f"{payload.get('organization') or self.user}/{payload['name']}"
        if self.repos.pop((payload.get("type") or "model", repo_id), None) is None:
            raise HubError(404, f"Repository Not Found for {repo_id}", "RepoNotFound")
        h._send(200)

    # ---- /api/{type}s/{repo}/... ------------------------------------------------------------------
    def _api(self, h: _Handler, method: str, match: re.Match, query: dict[str, list[str]], body: bytes) -> None:
        repo = self._repo(h, REPO_TYPES[match["type"]], match["repo"])
        action, rest = match["action"], match["rest"] or ""
        if action is None and method == "GET":
            return h._json(200, self._info(repo, repo.branches["main"]))
        if action == "revision" and method == "GET":
            return h._json(200, self._info(repo, self._revision(repo, rest)))
        if action == "tree" and method == "GET":
            revision, _, sub = rest.partition("/")
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            return h._json(200, self._tree(repo, self._revision(repo, revision), unquote(sub), recursive))
        if action == "paths-info" and method == "POST":
            files = repo.snapshots[self._revision(repo, rest)]
            paths = parse_qs(body.decode()).get("paths", [])
            return h._json(200, [self._entry(p, files[p]) for p in paths if p in files])
        if action == "preupload" and method == "POST":
            self._require_auth(h)
            return self._preupload(h, repo, rest, json.loads(body))
        if action == "commit" and method == "POST":
            self._require_auth(h)
            return self._commit(h, repo, rest, body, query)
        if action == "branch" and method == "POST":
            self._require_auth(h)
            return self._branch(h, repo, unquote(rest), json.loads(body or b"{}"))
        self.unhandled.append((method, match.string))
        raise HubError(404, f"local hub: no route for {method} {match.string}")

    def _card_data(self, files: dict[str, bytes]) -> dict[str, Any]:
        readme = files.get("README.md", b"").decode("utf-8", "replace")
        found = re.match(r"^---\s*\n(.*?)\n---\s*\n", readme, re.DOTALL)
        if not found or yaml is None:
            return {}
        data = yaml.safe_load(found.group(1))
        return data if isinstance(data, dict) else {}

    def _info(self, repo: Repo, oid: str) -> dict[str, Any]:
        files = repo.snapshots[oid]
        card = self._card_data(files)
        info: dict[str, Any] = {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": oid,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "createdAt": repo.created_at,
            "lastModified": _now(),
            "tags": list(card.get("tags") or []),
            "siblings": [{"rfilename": p, "size": len(d), "blobId": git_oid(d)} for p, d in sorted(files.items())],
        }
        if repo.repo_type == "model":
            info.update(modelId=repo.repo_id, downloads=0, likes=0, library_name=card.get("library_name"))
            if card.get("pipeline_tag"):
                info["pipeline_tag"] = card["pipeline_tag"]
            if "config.json" in files:
                try:
                    config = json.loads(files["config.json"])
                    info["config"] = {k: config[k] for k in ("architectures", "model_type") if k in config}
                except ValueError:
                    pass
        if card:
            info["cardData"] = card
        return info

    @staticmethod
    def _entry(path: str, data: bytes) -> dict[str, Any]:
        return {"type": "file", "oid": git_oid(data), "size": len(data), "path": path}

    def _tree(self, repo: Repo, oid: str, sub: str, recursive: bool) -> list[dict[str, Any]]:
        prefix = f"{sub.strip('/')}/" if sub.strip("/") else ""
        entries: dict[str, dict[str, Any]] = {}
        for path, data in sorted(repo.snapshots[oid].items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix):].split("/")
            if len(parts) == 1 or recursive:
                entries[path] = self._entry(path, data)
            for depth in range(1, len(parts) if recursive else min(2, len(parts))):
                folder = prefix + "/".join(parts[:depth])
                entries.setdefault(folder, {"type": "directory", "oid": git_oid(folder.encode()), "size": 0,
                                            "path": folder})
        if prefix and not entries:
            raise HubError(404, f"{sub} does not exist", "EntryNotFound")
        return list(entries.values())

    def _preupload(self, h: _Handler, repo: Repo, revision: str, payload: dict[str, Any]) -> None:
        oid = repo.resolve(unquote(revision))
        current = repo.snapshots[oid] if oid else {}
        files = [
            {
                "path": f["path"],
                "uploadMode": "regular",  # never LFS/Xet: the whole content comes base64 in the commit
                "shouldIgnore": False,
                "oid": git_oid(current[f["path"]]) if f["path"] in current else None,
            }
            for f in payload.get("files", [])
        ]
        h._json(200, {"files": files, "commitOid": oid})

    def _commit(self, h: _Handler, repo: Repo, revision: str, body: bytes, query: dict[str, list[str]]) -> None:
        revision = unquote(revision)
        parent = self._revision(repo, revision)
        create_pr = query.get("create_pr", ["0"])[0] in ("1", "true")
        if revision not in repo.branches and not create_pr:
            raise HubError(400, f"Cannot commit to {revision}: not a branch")
        files = dict(repo.snapshots[parent])
        header: dict[str, Any] = {}
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                content = value["content"]
                data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                files[value["path"]] = data
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                files = {p: d for p, d in files.items() if not p.startswith(folder)}
            else:
                raise HubError(400, f"local hub: unsupported commit operation {key!r} (only regular files)")
        expected = header.get("parentCommit")
        if expected and not parent.startswith(expected):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        oid = repo.commit(parent, files, header.get("summary", ""))
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        pr_url = None
        if create_pr:
            repo.pr_count += 1
            repo.branches[f"refs/pr/{repo.pr_count}"] = oid
            pr_url = f"{self.url}/{prefix}{repo.repo_id}/discussions/{repo.pr_count}"
        else:
            repo.branches[revision] = oid
        h._json(200, {"commitUrl": f"{self.url}/{prefix}{repo.repo_id}/commit/{oid}", "commitOid": oid,
                      "pullRequestUrl": pr_url, "success": True})

    def _branch(self, h: _Handler, repo: Repo, branch: str, payload: dict[str, Any]) -> None:
        if branch in repo.branches:
            raise HubError(409, f"Reference already exists: {branch}")
        start = payload.get("startingPoint") or "main"
        repo.branches[branch] = self._revision(repo, start)
        h._send(200, b"{}")

    # ---- downloads ------------------------------------------------------------------------------
    def _resolve(self, h: _Handler, method: str, match: re.Match) -> None:
        repo = self._repo(h, REPO_TYPES[match["type"] or "models"], match["repo"])
        oid = repo.resolve(unquote(match["rev"]))
        if oid is None:
            raise HubError(404, f"Invalid rev id: {unquote(match['rev'])}", "RevisionNotFound")
        path = unquote(match["path"])
        data = repo.snapshots[oid].get(path)
        headers = {"X-Repo-Commit": oid}
        if data is None:
            # The client caches "no such file at this commit" using X-Repo-Commit.
            h._send(404, b"" if method == "HEAD" else b'{"error": "Entry not found"}',
                    {**headers, "X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"},
                    head=method == "HEAD")
            return
        headers.update({"ETag": f'"{git_oid(data)}"', "Content-Type": "application/octet-stream",
                        "Accept-Ranges": "bytes"})
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", h.headers.get("Range", ""))
        if ranged and method == "GET":  # resumed download
            start = int(ranged[1])
            end = int(ranged[2]) if ranged[2] else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            h._send(206, data[start : end + 1], headers)
            return
        h._send(200, data, headers, head=method == "HEAD")


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    hub = LocalHub().start(args.port)
    print(f"local hub at {hub.url} (HF_ENDPOINT={hub.url}); Ctrl-C to stop", file=sys.stderr)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        hub.stop()


if __name__ == "__main__":
    main()
