"""A fake Hugging Face Hub speaking HTTP on loopback, for the publish tests (tests/test_hub_e2e.py).

    hub = FakeHub(token="hf_...").start()     # stdlib ThreadingHTTPServer in a thread; hub.url = http://127.0.0.1:<port>
    hub.faults.append(("commit", 500))        # the next commit request answers 500 (one fault per entry)
    hub.files("org/prefs", "main")            # {path: bytes} committed on that branch
    hub.stop()

It keeps dataset repos, branches, commits and LFS objects in memory and serves the endpoints
``huggingface_hub`` (2.x, with ``HF_HUB_DISABLE_XET=1``: the git-LFS "basic" transfer, no Xet storage) calls
to create a repo, create a branch, list a revision's tree and commit a folder with ``upload_folder``:

- ``POST /api/repos/create``: a new repo holds one commit with the Hub's default dataset ``.gitattributes``
  (``*.parquet``, ``*.png``, ... stored with LFS); an existing one answers 409, as the Hub does.
- ``POST /api/datasets/{repo}/branch/{branch}``: from ``startingPoint`` or ``main``; 409 when it exists.
- ``GET /api/datasets/{repo}/tree/{rev}[/{path}]?recursive=``: files (with their ``lfs`` pointer) and folders.
- ``GET /api/datasets/{repo}/revision/{rev}``: the head commit (asked after a commit with nothing to change);
  ``GET /api/datasets/{repo}``: the same for main (asked when creating the repo was refused).
- ``POST /api/validate-yaml``: the README's front matter must parse as a YAML mapping.
- ``GET /api/agent-harnesses``: an empty registry (huggingface_hub's user-agent telemetry, fetched once a day).
- ``POST /api/datasets/{repo}/preupload/{rev}``: ``lfs`` for paths the revision's ``.gitattributes`` routes to
  LFS or files over 10 MiB, ``regular`` otherwise; the ``oid`` of the file already at that path.
- ``POST /datasets/{repo}.git/info/lfs/objects/batch``: upload + verify actions for objects not stored yet,
  none for objects already stored (what makes a re-run skip finished uploads).
- ``PUT /lfs/{repo}/{oid}?X-Amz-Signature=...`` (the upload action: a presigned storage URL, no token; the body
  must hash to ``oid``) and ``POST /lfs-verify/{repo}``.
- ``POST /api/datasets/{repo}/commit/{rev}``: the NDJSON payload (``header``; ``file`` inline base64;
  ``lfsFile`` pointers to stored objects; ``deletedFile`` / ``deletedFolder``), applied all or nothing.

Every API request must carry ``Authorization: Bearer <token>`` (401 otherwise); the storage upload and the
telemetry registry take none. A token in ``read_tokens`` (a read-only token) may read but is refused (403)
by every endpoint that writes: creating a repo or branch, preupload, the LFS batch and verify, a commit.
A request to any other endpoint answers 501 and is recorded in ``unhandled``, so a test fails loudly naming
the path. ``log`` records ``(method, path, authorization, status)`` for every request.
"""

from __future__ import annotations

import base64
import collections
import fnmatch
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

# The .gitattributes the Hub writes into a new dataset repo (the LFS lines that matter for a release).
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in (
    "*.7z", "*.arrow", "*.bin", "*.gz", "*.h5", "*.jpg", "*.jpeg", "*.npy", "*.parquet", "*.pickle", "*.pkl",
    "*.png", "*.pt", "*.safetensors", "*.tar", "*.zip", "*.zst",
))
LFS_SIZE = 10 * 2**20  # larger files go to LFS whatever .gitattributes says


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class Blob:
    data: bytes
    lfs: bool

    def info(self, path: str) -> dict[str, Any]:
        """The tree entry of this file (``oid`` is the git blob: the pointer for an LFS file)."""
        if not self.lfs:
            return {"type": "file", "oid": git_blob_oid(self.data), "size": len(self.data), "path": path}
        sha = hashlib.sha256(self.data).hexdigest()
        pointer = lfs_pointer(sha, len(self.data))
        return {"type": "file", "oid": git_blob_oid(pointer), "size": len(self.data), "path": path,
                "lfs": {"oid": sha, "size": len(self.data), "pointerSize": len(pointer)}}


@dataclass
class Commit:
    oid: str
    message: str
    files: dict[str, Blob]


@dataclass
class Repo:
    private: bool
    branches: dict[str, Commit] = field(default_factory=dict)
    lfs: dict[str, bytes] = field(default_factory=dict)  # sha256 -> content
    commits: list[Commit] = field(default_factory=list)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (m, re.compile(p), name) for m, p, name in [
        ("POST", r"/api/repos/create", "create_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("GET", r"/api/agent-harnesses", "agent_harnesses"),
        ("POST", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/branch/(?P<branch>[^/]+)", "create_branch"),
        ("GET", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", "tree"),
        ("GET", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/revision/(?P<rev>[^/]+)", "revision"),
        ("GET", r"/api/datasets/(?P<repo>[^/]+/[^/]+)", "repo_info"),
        ("POST", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)", "commit"),
        ("POST", r"/datasets/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch", "lfs_batch"),
        ("PUT", r"/lfs/(?P<repo>[^/]+/[^/]+)/(?P<oid>[0-9a-f]{64})", "lfs_upload"),
        ("POST", r"/lfs-verify/(?P<repo>[^/]+/[^/]+)", "lfs_verify"),
    ]
]


PUBLIC = {"agent_harnesses", "lfs_upload"}  # no token: public telemetry; a presigned storage URL (signed query)
WRITES = {"create_repo", "create_branch", "preupload", "lfs_batch", "lfs_verify", "commit"}


class FakeHub:
    def __init__(self, token: str, read_tokens: tuple[str, ...] = ()):
        self.token = token
        self.read_tokens = read_tokens
        self.repos: dict[str, Repo] = {}
        self.faults: collections.deque[tuple[str, int]] = collections.deque()  # (route name, status), in order
        self.log: list[tuple[str, str, str | None, int]] = []
        self.unhandled: list[str] = []
        self.lock = threading.Lock()

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                hub._serve(self)

            do_POST = do_PUT = do_DELETE = do_HEAD = do_GET

            def log_message(self, *args):  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- what the tests read -----------------------------------------------------------------------

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        return {p: b.data for p, b in self.repos[repo_id].branches[revision].files.items()}

    def requests(self, name: str) -> list[tuple[str, str, str | None, int]]:
        return [r for r in self.log if any(n == name and m == r[0] and p.fullmatch(r[1]) for m, p, n in ROUTES)]

    # --- HTTP ----------------------------------------------------------------------------------------

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        url = urlsplit(h.path)
        body = self._body(h)
        auth = h.headers.get("Authorization")
        try:
            route = next(((name, m) for method, pattern, name in ROUTES
                          if method == h.command and (m := pattern.fullmatch(url.path))), None)
            if route is None:
                self.unhandled.append(f"{h.command} {url.path}")
                raise HubError(501, f"fake Hub: unhandled {h.command} {url.path}")
            name, match = route
            readers = {f"Bearer {t}" for t in self.read_tokens}
            if name not in PUBLIC and auth != f"Bearer {self.token}" and auth not in readers:
                raise HubError(401, "Invalid credentials in Authorization header")
            if name in WRITES and auth in readers:
                raise HubError(403, "You don't have the rights to create a dataset under this namespace"
                               if name == "create_repo" else "Forbidden: this token cannot write to this repo")
            args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
            with self.lock:  # requests come on several threads (LFS uploads in parallel)
                if self.faults and self.faults[0][0] == name:
                    raise HubError(self.faults.popleft()[1], f"injected fault on {name}")
                status, payload, headers = 200, getattr(self, f"_{name}")(body, parse_qs(url.query), **args), {}
        except HubError as e:
            status, payload = e.status, {"error": e.message, **e.extra}
            headers = {"X-Error-Message": e.message} | ({"X-Error-Code": e.code} if e.code else {})
        self.log.append((h.command, url.path, auth, status))
        data = json.dumps(payload).encode()
        h.send_response(status)
        for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    @staticmethod
    def _body(h: BaseHTTPRequestHandler) -> bytes:
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(h.rfile.readline().split(b";")[0], 16)
                out += h.rfile.read(size)
                h.rfile.readline()
                if size == 0:
                    return out
        return h.rfile.read(int(h.headers.get("Content-Length") or 0))

    # --- endpoints -------------------------------------------------------------------------------------

    def _repo(self, repo: str) -> Repo:
        if repo not in self.repos:
            raise HubError(404, f"Repository Not Found for url: datasets/{repo}", "RepoNotFound")
        return self.repos[repo]

    def _head(self, repo: str, rev: str) -> Commit:
        r = self._repo(repo)
        if rev not in r.branches:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return r.branches[rev]

    def _new_commit(self, repo: Repo, message: str, files: dict[str, Blob]) -> Commit:
        oid = hashlib.sha1(f"{len(repo.commits)}:{message}".encode()).hexdigest()
        commit = Commit(oid, message, files)
        repo.commits.append(commit)
        return commit

    def _create_repo(self, body: bytes, query: dict) -> dict[str, Any]:
        req = json.loads(body)
        if req.get("type") != "dataset":
            raise HubError(400, f"fake Hub: only dataset repos, got type {req.get('type')!r}")
        repo_id = f"{req['organization']}/{req['name']}"
        url = f"{self.url}/datasets/{repo_id}"
        if repo_id in self.repos:
            raise HubError(409, "You already created this dataset repo", url=url)  # the Hub sends the url
        repo = self.repos[repo_id] = Repo(private=req.get("visibility") == "private")
        files = {".gitattributes": Blob(GITATTRIBUTES.encode(), lfs=False)}
        repo.branches["main"] = self._new_commit(repo, "initial commit", files)
        return {"url": url, "name": repo_id, "id": repo_id}

    def _create_branch(self, body: bytes, query: dict, repo: str, branch: str) -> dict[str, Any]:
        r = self._repo(repo)
        start = json.loads(body or b"{}").get("startingPoint") or "main"
        if branch in r.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        r.branches[branch] = self._head(repo, start)
        return {}

    def _tree(self, body: bytes, query: dict, repo: str, rev: str, path: str = "") -> list[dict[str, Any]]:
        files = self._head(repo, rev).files
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        prefix = f"{path.strip('/')}/" if path else ""
        out: dict[str, dict[str, Any]] = {}
        for p, blob in sorted(files.items()):
            if not p.startswith(prefix):
                continue
            parts = p[len(prefix):].split("/")
            for depth in range(1, len(parts)):  # the folders on the way
                folder = prefix + "/".join(parts[:depth])
                if depth == 1 or recursive:
                    out.setdefault(folder, {"type": "directory", "oid": git_blob_oid(folder.encode()), "size": 0,
                                            "path": folder})
            if len(parts) == 1 or recursive:
                out[p] = blob.info(p)
        if path and not out:
            raise HubError(404, f"{path} does not exist on {rev}", "EntryNotFound")
        return list(out.values())

    def _revision(self, body: bytes, query: dict, repo: str, rev: str) -> dict[str, Any]:
        head = self._head(repo, rev)
        return {"id": repo, "sha": head.oid, "private": self.repos[repo].private,
                "siblings": [{"rfilename": p} for p in sorted(head.files)]}

    def _agent_harnesses(self, body: bytes, query: dict) -> dict[str, Any]:
        return {"standardEnvVars": [], "harnesses": {}}  # telemetry huggingface_hub fetches once a day

    def _repo_info(self, body: bytes, query: dict, repo: str) -> dict[str, Any]:
        return self._revision(body, query, repo, "main")

    def _validate_yaml(self, body: bytes, query: dict) -> dict[str, Any]:
        content = json.loads(body)["content"]
        if content.startswith("---\n"):
            try:
                meta = yaml.safe_load(content.split("---\n", 2)[1])
            except yaml.YAMLError as e:
                raise HubError(400, f"Invalid YAML in README.md: {e}") from e
            if not isinstance(meta, dict):
                raise HubError(400, "README.md metadata must be a YAML mapping")
        return {"errors": [], "warnings": []}

    def _lfs_patterns(self, head: Commit) -> list[str]:
        attrs = head.files.get(".gitattributes")
        lines = attrs.data.decode().splitlines() if attrs else []
        return [line.split()[0] for line in lines if "filter=lfs" in line]

    def _preupload(self, body: bytes, query: dict, repo: str, rev: str) -> dict[str, Any]:
        head = self._head(repo, rev)
        patterns = self._lfs_patterns(head)
        out = []
        for f in json.loads(body)["files"]:
            name = f["path"].rsplit("/", 1)[-1]
            lfs = f["size"] > LFS_SIZE or any(fnmatch.fnmatch(name, p) for p in patterns)
            existing = head.files.get(f["path"])
            oid = None if existing is None else (existing.info(f["path"]).get("lfs", {}).get("oid")
                                                 if existing.lfs else existing.info(f["path"])["oid"])
            out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                        "oid": oid})
        return {"files": out, "commitOid": head.oid}

    def _lfs_batch(self, body: bytes, query: dict, repo: str) -> dict[str, Any]:
        r = self._repo(repo)
        req = json.loads(body)
        if req.get("operation") != "upload" or "basic" not in req.get("transfers", []):
            raise HubError(400, f"fake Hub: only basic LFS uploads, got {req.get('operation')} {req.get('transfers')}")
        objects = []
        for o in req["objects"]:
            entry = {"oid": o["oid"], "size": o["size"], "authenticated": True}
            if o["oid"] not in r.lfs:
                signed = f"{self.url}/lfs/{repo}/{o['oid']}?X-Amz-Signature={self._sign(repo, o['oid'])}"
                entry["actions"] = {"upload": {"href": signed},
                                    "verify": {"href": f"{self.url}/lfs-verify/{repo}"}}
            objects.append(entry)
        return {"transfer": "basic", "objects": objects}

    def _sign(self, repo: str, oid: str) -> str:
        return hashlib.sha256(f"{self.token}:{repo}:{oid}".encode()).hexdigest()[:32]

    def _lfs_upload(self, body: bytes, query: dict, repo: str, oid: str) -> dict[str, Any]:
        if query.get("X-Amz-Signature") != [self._sign(repo, oid)]:
            raise HubError(403, "SignatureDoesNotMatch")
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, f"uploaded content does not hash to {oid}")
        self._repo(repo).lfs[oid] = body
        return {}

    def _lfs_verify(self, body: bytes, query: dict, repo: str) -> dict[str, Any]:
        req = json.loads(body)
        stored = self._repo(repo).lfs.get(req["oid"])
        if stored is None or len(stored) != req["size"]:
            raise HubError(404, f"LFS object {req['oid']} not found or of another size")
        return {}

    def _commit(self, body: bytes, query: dict, repo: str, rev: str) -> dict[str, Any]:
        r = self._repo(repo)
        head = self._head(repo, rev)
        files = dict(head.files)
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0]["key"] != "header":
            raise HubError(400, "the commit payload must start with its header")
        for op in lines[1:]:
            key, value = op["key"], op["value"]
            if key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, f"fake Hub: file encoding {value.get('encoding')!r}")
                files[value["path"]] = Blob(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                data = r.lfs.get(value["oid"])
                if data is None or ("size" in value and len(data) != value["size"]):
                    raise HubError(422, f"Your push was rejected because an LFS pointer pointed to a file that "
                                        f"does not exist: {value['path']}")
                files[value["path"]] = Blob(data, lfs=True)
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                gone = [p for p in files if p.startswith(folder)]
                if not gone:
                    raise HubError(404, f"A folder with this name doesn't exist: {value['path']}", "EntryNotFound")
                for p in gone:
                    del files[p]
            else:
                raise HubError(400, f"fake Hub: unknown commit operation {key!r}")
        commit = self._new_commit(r, lines[0]["value"]["summary"], files)
        r.branches[rev] = commit
        return {"commitUrl": f"{self.url}/datasets/{repo}/commit/{commit.oid}", "commitOid": commit.oid,
                "success": True}
