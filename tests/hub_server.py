"""A local Hugging Face Hub endpoint for offline tests: the HTTP routes huggingface_hub 2.x calls.

Point the client at it with HF_ENDPOINT (read when huggingface_hub is imported) or `endpoint=`.
It keeps repos, branches, commits and LFS objects in memory and logs every request (never a token).

Routes (the ROUTES table below; what the client calls them for):
  POST /api/repos/create                                  create_repo
  POST /api/validate-yaml                                 create_commit, when README.md is committed
  GET  /api/whoami-v2                                     whoami
  GET  /api/{type}s/{ns}/{name}[/revision/{rev}]           repo_info (HfFileSystem resolves paths with it)
  GET  /api/{type}s/{ns}/{name}/tree/{rev}[/{path}]        list_repo_tree, HfFileSystem.ls (Link pagination)
  POST /api/{type}s/{ns}/{name}/paths-info/{rev}           get_paths_info, HfFileSystem.info
  POST /api/{type}s/{ns}/{name}/preupload/{rev}            upload mode per file (regular or lfs)
  POST /api/{type}s/{ns}/{name}/commit/{rev}               create_commit (NDJSON body)
  POST /api/{type}s/{ns}/{name}/branch/{branch}            create_branch
  POST /{type}s/{ns}/{name}.git/info/lfs/objects/batch     LFS batch API (basic transfer)
  PUT  /lfs-upload/{oid}, POST /lfs-verify                 where the batch API sends LFS bodies
  GET|HEAD /{type}s/{ns}/{name}/resolve/{rev}/{path}       downloads, with Range

Xet: huggingface_hub uploads LFS files with Xet whenever the hf_xet package is installed, whatever
the server says, and downloads with Xet only when the server sends X-Xet-* headers. This server
never sends them and answers the Xet token routes with 501 and a hint, so clients must run with
HF_HUB_DISABLE_XET=1 to upload LFS files (or use `lfs=False`: every file is then a regular file).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

LFS_SUFFIXES = (".tar", ".bin", ".zip", ".gz", ".mp4", ".jpg", ".png", ".parquet", ".arrow")
LFS_MIN_SIZE = 10 << 20  # the Hub stores files of 10 MB or more with LFS
GITATTRIBUTES = b"*.tar filter=lfs diff=lfs merge=lfs -text\n"
TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}

API_REPO = re.compile(r"^/api/(?P<type>models|datasets|spaces)/(?P<ns>[^/]+)/(?P<name>[^/]+)(?P<rest>/.*)?$")
LFS_BATCH = re.compile(r"^/(?:(?P<type>datasets|spaces)/)?(?P<ns>[^/]+)/(?P<name>[^/]+)\.git/info/lfs/objects/batch$")
RESOLVE = re.compile(r"^/(?:(?P<type>datasets|spaces)/)?(?P<ns>[^/]+)/(?P<name>[^/]+)"
                     r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class Blob:
    """A file in a commit: its bytes (regular file) or the sha256 of an LFS object."""

    size: int
    oid: str  # git blob id: of the content, or of the LFS pointer
    content: bytes | None = None
    sha256: str | None = None

    @classmethod
    def regular(cls, data: bytes) -> Blob:
        return cls(size=len(data), oid=git_blob_id(data), content=data)

    @classmethod
    def lfs(cls, sha256: str, size: int) -> Blob:
        return cls(size=size, oid=git_blob_id(lfs_pointer(sha256, size)), sha256=sha256)


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit oid
    commits: dict[str, dict[str, Blob]] = field(default_factory=dict)  # commit oid -> tree {path: Blob}
    history: list[dict[str, Any]] = field(default_factory=list)  # {"oid", "branch", "summary", "paths"}

    def commit(self, branch: str, tree: dict[str, Blob], summary: str, paths: list[str]) -> str:
        parent = self.branches.get(branch, "")
        digest = hashlib.sha1(f"{parent}\n{summary}\n".encode())
        for path in sorted(tree):
            digest.update(f"{path} {tree[path].oid}\n".encode())
        oid = digest.hexdigest()
        self.commits[oid] = dict(tree)
        self.branches[branch] = oid
        self.history.append({"oid": oid, "branch": branch, "summary": summary, "paths": paths})
        return oid

    def tree(self, revision: str) -> tuple[str, dict[str, Blob]] | None:
        oid = self.branches.get(revision, revision)
        return (oid, self.commits[oid]) if oid in self.commits else None


STALL_SECONDS = 30  # a stalled request answers nothing for this long at most (bounded: tests never hang)


@dataclass
class Fault:
    """An injected failure (HubServer.inject)."""

    method: str  # "GET", "PUT", ... or "*"
    path_part: str
    fault: int | str | bytes
    times: int | None  # how many more requests get it (None: all)
    retry_after: str | None = "0"  # the Retry-After header of a 429 or 5xx (None: none)
    hits: int = 0


class HubError(Exception):
    """An HTTP error answered the way the Hub does (status, X-Error-Code, X-Error-Message)."""

    def __init__(self, status: int, message: str, code: str | None = None, extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra or {}


def not_found(repo_id: str) -> HubError:
    return HubError(404, "Repository not found", "RepoNotFound")


class HubServer:
    """The Hub on 127.0.0.1. `tokens` maps a token to its user; `lfs=False` makes every file regular."""

    def __init__(self, tokens: dict[str, str] | None = None, lfs: bool = True, page_size: int = 1000):
        self.tokens = dict(tokens or {})
        self.lfs = lfs
        self.page_size = page_size
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[dict[str, Any]] = []  # {"method", "path", "range", "user", "status"}
        self.cuts: dict[tuple[str, str], int] = {}  # (repo_id, path) -> bytes served before the file vanishes
        self.failing_commits: dict[str, int] = {}  # repo_id -> number of the commit that fails
        self.faults: list[Fault] = []  # injected by `inject`: checked in order, before routing
        self.lies: dict[str, tuple[str, bytes | None]] = {}  # path in a repo -> (lie, other bytes): `lie`
        self.stopping = threading.Event()  # set on exit: stalled requests give up
        self.lock = threading.RLock()
        self.httpd = HubHTTPServer(self)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    # ------------------------------------------------------------------ test helpers

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> dict[str, bytes]:
        """Every file of a revision, with its bytes (LFS objects resolved)."""
        with self.lock:
            _, tree = self.repos[(repo_type, repo_id)].tree(revision)
            return {path: self._content(blob) for path, blob in tree.items()}

    def history(self, repo_id: str, repo_type: str = "dataset") -> list[dict[str, Any]]:
        with self.lock:
            return list(self.repos[(repo_type, repo_id)].history)

    def cut_after(self, repo_id: str, path: str, nbytes: int) -> None:
        """The next download of `path` sends `nbytes` of its body, then the file vanishes from the repo
        and the connection drops: a file deleted while a client streams it."""
        self.cuts[(repo_id, path)] = nbytes

    def fail_commit(self, repo_id: str, number: int) -> None:
        """The repo's `number`-th commit after its initial one answers 503 (once): an interrupted push."""
        self.failing_commits[repo_id] = number

    def inject(self, method: str, path_part: str, fault: int | str | bytes, times: int | None = None,
               retry_after: str | None = "0") -> Fault:
        """The next `times` (None: every) `method` requests whose path contains `path_part` get `fault`:
        an HTTP status (an error body, and `Retry-After: <retry_after>` on 429/5xx, by default 0 so a
        retrying client does not sleep long; None sends none), "stall" (no answer until the server stops
        or STALL_SECONDS pass), or bytes (200 with that body instead of the real one)."""
        fault_ = Fault(method.upper(), path_part, fault, times, retry_after)
        with self.lock:
            self.faults.append(fault_)
        return fault_

    def lie(self, path: str, lie: str, other: bytes | None = None) -> None:
        """Downloads of `path` (in any repo) lie as tests/http_server.FileServer's `lie` says, with `other` as
        the other file's bytes ("ignores-range", "other-bytes", "shifted", "shifted-quietly")."""
        with self.lock:
            self.lies[path] = (lie, other)

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()
            self.lies.clear()

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault_ in self.faults:
                if fault_.method in (method, "*") and fault_.path_part in path and fault_.times != 0:
                    if fault_.times is not None:
                        fault_.times -= 1
                    fault_.hits += 1
                    return fault_
        return None

    def uploads(self, since: int = 0) -> list[dict[str, Any]]:
        """Requests that send data to the repo: preupload, LFS batch and PUT, commits."""
        writes = ("/preupload/", "/commit/", "/lfs/objects/batch", "/lfs-upload/")
        return [r for r in self.requests[since:] if any(w in r["path"] for w in writes)]

    def downloads(self, since: int = 0) -> list[dict[str, Any]]:
        return [r for r in self.requests[since:] if r["method"] == "GET" and "/resolve/" in r["path"]]

    # ------------------------------------------------------------------ state

    def _content(self, blob: Blob) -> bytes:
        return blob.content if blob.content is not None else self.lfs_objects[blob.sha256]

    def repo(self, repo_type: str, repo_id: str, user: str | None, write: bool = False) -> Repo:
        """The repo if `user` may read it (or write to it); else the Hub's answers: private repos are
        'not found' to strangers, anonymous writers get 401, other users' namespaces 403."""
        repo = self.repos.get((repo_type, repo_id))
        owner = repo_id.split("/")[0]
        if repo is None:
            raise not_found(repo_id)
        if repo.private and user != owner:
            raise HubError(401 if user is None else 404, "Repository not found", "RepoNotFound")
        if write and user is None:
            raise HubError(401, "You must be authenticated to write to this repository")
        if write and user != owner:
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    def tree(self, repo: Repo, revision: str) -> tuple[str, dict[str, Blob]]:
        found = repo.tree(revision)
        if found is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return found

    def create(self, user: str | None, body: dict[str, Any]) -> dict[str, Any]:
        if user is None:
            raise HubError(401, "Invalid username or password.")
        namespace = body.get("organization") or user
        if namespace != user:
            raise HubError(403, f"You don't have the rights to create a repo under {namespace}")
        repo_type = body.get("type") or "model"
        repo_id = f"{namespace}/{body['name']}"
        url = f"{self.url}/{URL_PREFIX[repo_type]}{repo_id}"
        with self.lock:
            if (repo_type, repo_id) in self.repos:  # the Hub's 409 still names the repo (create_repo reads it)
                raise HubError(409, "You already created this repo", extra={"url": url})
            repo = Repo(repo_type, repo_id, private=body.get("visibility") == "private" or bool(body.get("private")))
            repo.commit("main", {".gitattributes": Blob.regular(GITATTRIBUTES)}, "initial commit", [".gitattributes"])
            self.repos[(repo_type, repo_id)] = repo
        return {"url": url, "name": repo_id, "id": repo_id}

    def apply_commit(self, repo: Repo, revision: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
        with self.lock:
            if revision not in repo.branches:
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            if self.failing_commits.get(repo.repo_id) == len(repo.history):
                del self.failing_commits[repo.repo_id]
                raise HubError(503, "Service Unavailable")
            _, tree = self.tree(repo, revision)
            tree = dict(tree)
            summary, paths = "", []
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "header":
                    summary = value.get("summary", "")
                elif key == "file":
                    content = value["content"]
                    data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                    tree[value["path"]] = Blob.regular(data)
                elif key == "lfsFile":
                    if value["oid"] not in self.lfs_objects:
                        raise HubError(422, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                    tree[value["path"]] = Blob.lfs(value["oid"], value["size"])
                elif key == "deletedFile":
                    if value["path"] not in tree:
                        raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                    del tree[value["path"]]
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    for path in [p for p in tree if p.startswith(prefix)]:
                        del tree[path]
                else:
                    raise HubError(400, f"unsupported commit operation {key!r}")
                if key != "header":
                    paths.append(value["path"])
            oid = repo.commit(revision, tree, summary, paths)
        return {"success": True, "commitOid": oid, "hookOutput": "",
                "commitUrl": f"{self.url}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}/commit/{oid}"}

    def upload_mode(self, path: str, size: int, sample: bytes) -> str:
        if not self.lfs or size == 0:
            return "regular"
        binary = b"\0" in sample
        return "lfs" if path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE or binary else "regular"


# ---------------------------------------------------------------------- listing


def entry(path: str, blob: Blob) -> dict[str, Any]:
    info: dict[str, Any] = {"type": "file", "oid": blob.oid, "size": blob.size, "path": path}
    if blob.sha256 is not None:
        info["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": len(lfs_pointer(blob.sha256, blob.size))}
    return info


def folder_entry(path: str, tree: dict[str, Blob]) -> dict[str, Any]:
    inside = sorted(f"{p} {b.oid}" for p, b in tree.items() if p.startswith(path + "/"))
    return {"type": "directory", "oid": hashlib.sha1("\n".join(inside).encode()).hexdigest(), "path": path}


def list_tree(tree: dict[str, Blob], folder: str, recursive: bool) -> list[dict[str, Any]]:
    prefix = folder + "/" if folder else ""
    files = sorted(p for p in tree if p.startswith(prefix))
    if folder and not files:
        raise HubError(404, f"{folder} does not exist on this revision", "EntryNotFound")
    out: dict[str, dict[str, Any]] = {}
    for path in files:
        parts = path[len(prefix):].split("/")
        for depth in range(1, len(parts)):  # the folders on the way
            sub = prefix + "/".join(parts[:depth])
            if (recursive or depth == 1) and sub not in out:
                out[sub] = folder_entry(sub, tree)
        if recursive or len(parts) == 1:
            out[path] = entry(path, tree[path])
    return [out[k] for k in sorted(out)]


def paths_info(tree: dict[str, Blob], paths: list[str]) -> list[dict[str, Any]]:
    out = []
    for path in paths:
        path = path.strip("/")
        if path in tree:
            out.append(entry(path, tree[path]))
        elif any(p.startswith(path + "/") for p in tree):
            out.append(folder_entry(path, tree))
    return out


def validate_card(content: str) -> list[str]:
    """What the Hub's YAML validation rejects that a generated card could get wrong."""
    match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
    if not match:
        return []
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as e:
        return [f"invalid YAML: {e}"]
    if not isinstance(meta, dict):
        return ["the metadata must be a mapping"]
    errors = []
    if "license" in meta and not isinstance(meta["license"], (str, list)):
        errors.append('"license" must be a string or a list of strings')
    for config in meta.get("configs", []) or []:
        if not isinstance(config, dict) or not isinstance(config.get("config_name"), str):
            errors.append('"configs" items need a "config_name"')
            continue
        files = config.get("data_files")
        items = files if isinstance(files, list) else [files]
        if not all(isinstance(i, str) or (isinstance(i, dict) and {"split", "path"} <= set(i)) for i in items):
            errors.append(f'"configs.{config["config_name"]}.data_files" must be paths or {{split, path}} items')
    return errors


# ---------------------------------------------------------------------- routes

# Patterns match the request path as sent (still %-quoted); each handler unquotes what it reads.
API = r"/api/(?P<type>models|datasets|spaces)/(?P<ns>[^/]+)/(?P<name>[^/]+)"
REPO_URL = r"/(?:(?P<type>datasets|spaces)/)?(?P<ns>[^/]+)/(?P<name>[^/]+)"  # as in the Hub's web URLs
REVISION = r"(?P<rev>[^/]+)"


@dataclass
class Call:
    """One request as a route's handler sees it: the hub, the path's match, the body, the caller."""

    hub: HubServer
    http: HubRequestHandler
    match: re.Match[str]
    body: bytes
    user: str | None

    @property
    def method(self) -> str:
        return self.http.command

    def arg(self, name: str) -> str:
        return unquote(self.match[name] or "")

    def api_repo(self, write: bool = False) -> Repo:
        """The repo of an /api/{type}s/{ns}/{name}/... path, if the caller may read (or write) it."""
        repo_id = f"{unquote(self.match['ns'])}/{unquote(self.match['name'])}"
        return self.hub.repo(TYPES[self.match["type"]], repo_id, self.user, write)

    def url_repo(self) -> tuple[str, str]:
        """(type, id) of a path like the Hub's web URLs: a model has no type prefix."""
        repo_type = TYPES[self.match["type"]] if self.match["type"] else "model"
        return repo_type, f"{self.match['ns']}/{self.match['name']}"

    def json_body(self) -> Any:
        return json.loads(self.body)

    def reply_json(self, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.http.reply(status, json.dumps(data).encode(), headers=headers)


def create_repo(call: Call) -> None:
    call.reply_json(call.hub.create(call.user, call.json_body()))


def validate_yaml(call: Call) -> None:
    errors = validate_card(call.json_body()["content"])
    call.reply_json({"errors": [{"message": m} for m in errors], "warnings": []}, 400 if errors else 200)


def agent_harnesses(call: Call) -> None:
    """The client's user-agent telemetry: an empty registry."""
    call.reply_json({"standardEnvVars": [], "harnesses": {}})


def whoami(call: Call) -> None:
    if call.user is None:
        raise HubError(401, "Invalid username or password.")
    call.reply_json({"type": "user", "name": call.user, "orgs": [], "auth": {"type": "access_token"}})


def lfs_upload(call: Call) -> None:
    oid, body = call.match["oid"], call.body
    if hashlib.sha256(body).hexdigest() != oid or len(body) != int(call.http.query.get("size", len(body))):
        raise HubError(400, f"the uploaded body does not match LFS object {oid}")
    with call.hub.lock:
        call.hub.lfs_objects[oid] = body
    call.http.reply(200)


def lfs_verify(call: Call) -> None:
    status = 200 if call.json_body()["oid"] in call.hub.lfs_objects else 404
    call.reply_json({"message": "ok" if status == 200 else "missing"}, status)


def no_xet(call: Call) -> None:
    raise HubError(501, "this local Hub endpoint has no Xet storage: run the client with "
                        "HF_HUB_DISABLE_XET=1 (LFS uploads then use the plain HTTP protocol)")


def repo_info(call: Call) -> None:
    repo = call.api_repo()
    oid, tree = call.hub.tree(repo, call.arg("rev") or "main")
    siblings = [{"rfilename": p, "size": b.size, "blobId": b.oid} for p, b in sorted(tree.items())]
    call.reply_json({"id": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": oid, "private": repo.private,
                     "disabled": False, "gated": False, "tags": [], "siblings": siblings,
                     "lastModified": "2024-01-01T00:00:00.000Z", "createdAt": "2024-01-01T00:00:00.000Z"})


def repo_tree(call: Call) -> None:
    _, tree = call.hub.tree(call.api_repo(), call.arg("rev"))
    recursive = call.http.query.get("recursive", "").lower() in ("1", "true")
    call.http.reply_paged(list_tree(tree, call.arg("path").strip("/"), recursive))


def repo_paths_info(call: Call) -> None:
    _, tree = call.hub.tree(call.api_repo(), call.arg("rev"))
    call.reply_json(paths_info(tree, parse_qs(call.body.decode()).get("paths", [])))


def preupload(call: Call) -> None:
    repo = call.api_repo(write=True)
    oid, tree = call.hub.tree(repo, call.arg("rev"))
    files = []
    for item in call.json_body()["files"]:
        mode = call.hub.upload_mode(item["path"], item["size"], base64.b64decode(item["sample"]))
        existing = tree.get(item["path"])
        known = None if existing is None else existing.sha256 if mode == "lfs" else existing.oid
        files.append({"path": item["path"], "uploadMode": mode, "shouldIgnore": False, "oid": known})
    call.reply_json({"files": files, "commitOid": oid})


def commit(call: Call) -> None:
    repo = call.api_repo(write=True)
    lines = [json.loads(line) for line in call.body.decode().splitlines() if line.strip()]
    call.reply_json(call.hub.apply_commit(repo, call.arg("rev"), lines))


def create_branch(call: Call) -> None:
    repo, branch = call.api_repo(write=True), call.arg("branch")
    with call.hub.lock:
        if branch in repo.branches:
            raise HubError(409, f"Reference already exists: {branch}")
        start = (call.json_body() if call.body else {}).get("startingPoint") or "main"
        oid, _ = call.hub.tree(repo, start)
        repo.branches[branch] = oid
    call.reply_json({"ok": True})


def no_api_route(call: Call) -> None:
    raise HubError(404, f"no API route for {call.method} {call.match['rest'] or ''}")


def lfs_batch(call: Call) -> None:
    request = call.json_body()
    repo_type, repo_id = call.url_repo()
    hub = call.hub
    hub.repo(repo_type, repo_id, call.user, write=request.get("operation") == "upload")
    objects = []
    for obj in request["objects"]:
        item = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
        if obj["oid"] not in hub.lfs_objects:  # an object already stored needs no upload (resume)
            item["actions"] = {"upload": {"href": f"{hub.url}/lfs-upload/{obj['oid']}?size={obj['size']}"},
                               "verify": {"href": f"{hub.url}/lfs-verify"}}
        objects.append(item)
    call.http.reply(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                    content_type="application/vnd.git-lfs+json")


def byte_range(spec: str | None, size: int) -> tuple[int, int, int]:
    """(start, end inclusive, status) of a `Range: bytes=...` request for `size` bytes (its first range)."""
    if not (spec and spec.startswith("bytes=")):
        return 0, size - 1, 200
    first, _, last = spec[6:].split(",")[0].partition("-")
    start = int(first) if first else max(0, size - int(last))
    end = min(int(last), size - 1) if first and last else size - 1
    if start >= size and size:
        raise HubError(416, "Range Not Satisfiable")
    return start, end, 206


def resolve(call: Call) -> None:
    hub, (repo_type, repo_id) = call.hub, call.url_repo()
    revision, path = call.arg("rev"), call.arg("path")
    repo = hub.repo(repo_type, repo_id, call.user)
    with hub.lock:
        oid, tree = hub.tree(repo, revision)
        blob = tree.get(path)
        if blob is None:
            raise HubError(404, "Entry not found", "EntryNotFound")
        data = hub._content(blob)
        cut = hub.cuts.pop((repo_id, path), None) if call.method == "GET" else None
    lie, other = hub.lies.get(path, (None, None))
    spec = call.http.headers.get("Range") if lie != "ignores-range" else None
    if other is not None and (lie == "ignores-range" or (lie == "other-bytes" and spec)):
        data = other
    start, end, status = byte_range(spec, len(data))
    said = start
    if status == 206 and lie in ("shifted", "shifted-quietly"):
        start, end = start + 512, min(end + 512, len(data) - 1)
        said = start if lie == "shifted" else said
    headers = {"ETag": f'"{blob.sha256 or blob.oid}"', "X-Repo-Commit": oid, "Accept-Ranges": "bytes"}
    if blob.sha256:
        headers.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(blob.size)})
    if status == 206:
        headers["Content-Range"] = f"bytes {said}-{said + end - start}/{len(data)}"
    body = data[start:end + 1]
    if cut is None:
        return call.http.reply(status, body, content_type="application/octet-stream", headers=headers)
    call.http.reply_cut(status, body, headers, cut)
    with hub.lock:  # the file vanishes while the client streams it
        _, tree = hub.tree(repo, revision)
        repo.commit(revision, {p: b for p, b in tree.items() if p != path}, f"delete {path}", [path])
    call.http.drop_connection()


def no_route(call: Call) -> None:
    raise HubError(404, f"no route for {call.method} {call.match[0]}")


@dataclass(frozen=True)
class Route:
    methods: frozenset[str] | None  # None: any method
    pattern: re.Pattern[str]
    handle: Callable[[Call], None]


def route(methods: str, pattern: str, handle: Callable[[Call], None]) -> Route:
    """`methods`: space-separated, or "*" for any."""
    return Route(None if methods == "*" else frozenset(methods.split()), re.compile(pattern), handle)


# First match wins: an /api/{type}s/... path no API route takes is answered by no_api_route.
ROUTES = [
    route("POST", r"/api/repos/create", create_repo),
    route("POST", r"/api/validate-yaml", validate_yaml),
    route("*", r"/api/agent-harnesses", agent_harnesses),
    route("*", r"/api/whoami-v2", whoami),
    route("PUT", r"/lfs-upload/(?P<oid>[^/]+)", lfs_upload),
    route("POST", r"/lfs-verify", lfs_verify),
    route("*", API + r"/xet-.*", no_xet),
    route("GET", API + r"(?:/revision/" + REVISION + r")?/?", repo_info),
    route("GET", API + r"/tree/" + REVISION + r"(?:/(?P<path>.*))?", repo_tree),
    route("POST", API + r"/paths-info/" + REVISION, repo_paths_info),
    route("POST", API + r"/preupload/" + REVISION, preupload),
    route("POST", API + r"/commit/" + REVISION, commit),
    route("POST", API + r"/branch/(?P<branch>.+)", create_branch),
    route("*", API + r"(?P<rest>/.*)?", no_api_route),
    route("POST", REPO_URL + r"\.git/info/lfs/objects/batch", lfs_batch),
    route("GET HEAD", REPO_URL + r"/resolve/" + REVISION + r"/(?P<path>.+)", resolve),
    route("*", r".*", no_route),
]


def find_route(method: str, path: str) -> tuple[Route, re.Match[str]]:
    for candidate in ROUTES:
        if candidate.methods is None or method in candidate.methods:
            if match := candidate.pattern.fullmatch(path):
                return candidate, match
    raise AssertionError("no_route matches every path")


# ---------------------------------------------------------------------- HTTP


class HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hub: HubServer) -> None:
        super().__init__(("127.0.0.1", 0), HubRequestHandler)
        self.hub = hub


class HubRequestHandler(BaseHTTPRequestHandler):
    """HTTP plumbing: records the request, applies injected faults, authenticates, hands the request
    to its route (ROUTES) and answers a HubError the way the Hub does."""

    protocol_version = "HTTP/1.1"
    server: HubHTTPServer

    def log_message(self, *args) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body are separate writes: without this, Nagle's algorithm and the client's
        # delayed ACK stall every response by ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self.dispatch()

    def do_HEAD(self) -> None:
        self.dispatch()

    def do_POST(self) -> None:
        self.dispatch()

    def do_PUT(self) -> None:
        self.dispatch()

    def dispatch(self) -> None:
        hub = self.server.hub
        split = urlsplit(self.path)
        self.record: dict[str, Any] = {"method": self.command, "path": unquote(split.path),
                                       "range": self.headers.get("Range"), "user": None, "status": None,
                                       "agent": self.headers.get("User-Agent")}
        hub.requests.append(self.record)
        self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        try:
            body = self.read_body()
            if (fault := hub._fault_for(self.command, unquote(split.path))) is not None:
                return self.inject(fault)
            user = self.authenticate()
            self.record["user"] = user
            found, match = find_route(self.command, split.path)
            found.handle(Call(hub, self, match, body, user))
        except HubError as e:
            payload = json.dumps({"error": e.message, **e.extra}).encode()
            headers = {"X-Error-Message": e.message, **({"X-Error-Code": e.code} if e.code else {})}
            self.reply(e.status, payload, headers=headers)

    def inject(self, fault: Fault) -> None:
        self.record["fault"] = fault.fault if not isinstance(fault.fault, bytes) else "body"
        if fault.fault == "stall":
            self.server.hub.stopping.wait(STALL_SECONDS)
            self.close_connection = True
            return
        if isinstance(fault.fault, bytes):
            return self.reply(200, fault.fault)
        status = int(fault.fault)
        headers = {"X-Error-Message": f"injected fault: HTTP {status}"}
        if (status == 429 or status >= 500) and fault.retry_after is not None:
            headers["Retry-After"] = fault.retry_after
        self.reply(status, json.dumps({"error": f"injected fault: HTTP {status}"}).encode(), headers=headers)

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def authenticate(self) -> str | None:
        header = self.headers.get("Authorization")
        if not header:
            return None
        tokens = self.server.hub.tokens
        token = header.split(" ", 1)[1].strip() if header.lower().startswith("bearer ") else ""
        if token not in tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return tokens[token]

    def reply(self, status: int, body: bytes = b"", content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self.record["status"] = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def reply_paged(self, items: list[dict[str, Any]]) -> None:
        """One page of `items`, with a Link header to the next page as the Hub's listings have."""
        page_size = self.server.hub.page_size
        start = int(self.query.get("cursor", 0))
        headers = {}
        if start + page_size < len(items):
            query = {**self.query, "cursor": str(start + page_size)}
            params = "&".join(f"{k}={quote(v)}" for k, v in query.items())
            headers["Link"] = f'<{self.server.hub.url}{urlsplit(self.path).path}?{params}>; rel="next"'
        self.reply(200, json.dumps(items[start:start + page_size]).encode(), headers=headers)

    def reply_cut(self, status: int, body: bytes, headers: dict[str, str], cut: int) -> None:
        """Announce the whole body but send only its first `cut` bytes."""
        self.record["status"] = status
        self.record["cut"] = cut
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body[:cut])
        self.wfile.flush()

    def drop_connection(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


if __name__ == "__main__":  # manual use: python tests/hub_server.py [TOKEN USER]
    import sys

    tokens = {sys.argv[1]: sys.argv[2]} if len(sys.argv) > 2 else {"hf_local_test_token": "me"}
    with HubServer(tokens) as server:
        user = next(iter(tokens.values()))
        print(f"local Hub at {server.url} (user {user!r}); in another shell:\n"
              f"  export HF_ENDPOINT={server.url} HF_HUB_DISABLE_XET=1 HF_TOKEN=<the token>", flush=True)
        threading.Event().wait()
