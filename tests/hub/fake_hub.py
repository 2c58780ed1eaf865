"""A small in-memory stand-in for the Hugging Face Hub, served on 127.0.0.1 from a thread.

It implements only the endpoints huggingface_hub 2.4 calls to create a model repo, upload to it (preupload, the
legacy LFS batch protocol with a basic PUT transfer, and the NDJSON commit) and download from it (repo info, tree
listing, `resolve` with the headers `hf_hub_download` reads). Point a process at it with `HF_ENDPOINT=<url>`, a
token equal to `FakeHub.token` and `HF_HUB_DISABLE_XET=1` (the real Hub stores large files with Xet, which this fake
does not speak; huggingface_hub then uses LFS). Every request is logged in `requests`; anything it does not know
is answered 404 and also logged in `unhandled`, so a test can tell a missing endpoint from a real error.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

# Like the Hub's default .gitattributes: these suffixes always go through LFS, whatever their size.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf")
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
REPO_ID = r"(?P<repo>[\w.-]+/[\w.-]+)"


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a blob (what the Hub returns as `oid` / ETag for regular files)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(content: bytes) -> bytes:
    oid = hashlib.sha256(content).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(content)}\n".encode()


@dataclass
class StoredFile:
    content: bytes
    lfs: bool

    @property
    def etag(self) -> str:
        # The Hub's ETag: sha256 of the content for LFS files, git blob id for regular ones.
        return hashlib.sha256(self.content).hexdigest() if self.lfs else git_blob_sha1(self.content)


@dataclass
class Commit:
    oid: str
    summary: str
    files: dict[str, StoredFile]


@dataclass
class FakeRepo:
    private: bool
    commits: list[Commit] = field(default_factory=list)

    def at(self, revision: str) -> Commit | None:
        if revision == "main":
            return self.commits[-1]
        return next((c for c in self.commits if c.oid == revision), None)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


class FakeHub:
    """
    The in-memory Hub. Use as a context manager; `url` is the endpoint.

    Args:
        token (`str`): the only token accepted for writes.
        user (`str`): the namespace a repo id without one is created in (what `whoami` returns).
    """

    def __init__(self, token: str = "hf_fake_token", user: str = "tester"):
        self.token, self.user = token, user
        self.repos: dict[str, FakeRepo] = {}
        self.lfs_store: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.unhandled: list[tuple[str, str]] = []
        self.validated_cards: list[str] = []
        self._lock = threading.Lock()
        self._salt = uuid.uuid4().hex  # commit ids differ between servers, like real ones (no stale cache hits)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The content of every file of a repo at a revision."""
        return {path: f.content for path, f in self.repos[repo_id].at(revision).files.items()}

    # ---- routing -------------------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict, headers, body: bytes) -> tuple[int, dict, bytes]:
        routes = [
            ("GET", r"/api/whoami-v2", self._whoami),
            ("POST", r"/api/repos/create", self._create_repo),
            ("POST", r"/api/validate-yaml", self._validate_yaml),
            ("POST", rf"/api/models/{REPO_ID}/preupload/(?P<rev>[^/]+)", self._preupload),
            ("POST", rf"/api/models/{REPO_ID}/commit/(?P<rev>[^/]+)", self._commit),
            ("GET", rf"/api/models/{REPO_ID}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", self._tree),
            ("GET", rf"/api/models/{REPO_ID}(?:/revision/(?P<rev>[^/]+))?", self._repo_info),
            ("POST", rf"/{REPO_ID}\.git/info/lfs/objects/batch", self._lfs_batch),
            ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", self._lfs_upload),
            ("POST", r"/lfs-verify/(?P<oid>[0-9a-f]{64})", self._lfs_verify),
            ("GET", rf"/{REPO_ID}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", self._resolve),
            ("HEAD", rf"/{REPO_ID}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", self._resolve),
        ]
        with self._lock:
            self.requests.append((method, path))
        for route_method, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if route_method == method and match:
                params = match.groupdict()
                try:
                    with self._lock:
                        return handler(params=params, query=query, headers=headers, body=body)
                except HubError as error:
                    return _error(error)
        with self._lock:
            self.unhandled.append((method, path))
        return _error(HubError(404, f"fake hub: no route for {method} {path}"))

    # ---- helpers -------------------------------------------------------------------------------------------------

    def _require_token(self, headers) -> None:
        if headers.get("authorization") != f"Bearer {self.token}":
            raise HubError(401, "Invalid credentials in Authorization header")

    def _repo(self, repo_id: str, headers) -> FakeRepo:
        repo = self.repos.get(repo_id)
        authorized = headers.get("authorization") == f"Bearer {self.token}"
        if repo is None or (repo.private and not authorized):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _commit_at(self, repo: FakeRepo, revision: str) -> Commit:
        commit = repo.at(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _new_commit(self, repo: FakeRepo, summary: str, files: dict[str, StoredFile]) -> Commit:
        parent = repo.commits[-1].oid if repo.commits else ""
        digest = hashlib.sha1(f"{self._salt}\n{parent}\n{summary}\n{len(repo.commits)}".encode())
        for path in sorted(files):
            digest.update(f"{path}:{files[path].etag}".encode())
        commit = Commit(oid=digest.hexdigest(), summary=summary, files=files)
        repo.commits.append(commit)
        return commit

    # ---- endpoints -----------------------------------------------------------------------------------------------

    def _whoami(self, headers, **_):
        self._require_token(headers)
        return _json({"type": "user", "name": self.user, "auth": {"type": "access_token"}})

    def _create_repo(self, headers, body, **_):
        self._require_token(headers)
        payload = json.loads(body)
        if payload.get("type", "model") != "model":
            raise HubError(400, "the fake hub only hosts model repos")
        repo_id = f"{payload.get('organization') or self.user}/{payload['name']}"
        if repo_id in self.repos:
            # The Hub's 409 carries the repo url, which `create_repo(exist_ok=True)` returns.
            raise HubError(409, "You already created this model repo", url=f"{self.url}/{repo_id}")
        repo = self.repos[repo_id] = FakeRepo(private=payload.get("visibility") == "private")
        # Like the Hub, a new repo starts with one commit holding .gitattributes.
        attributes = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES)
        self._new_commit(repo, "initial commit", {".gitattributes": StoredFile(attributes.encode(), lfs=False)})
        return _json({"url": f"{self.url}/{repo_id}", "name": repo_id})

    def _validate_yaml(self, body, **_):
        """The offline part of the Hub's metadata checks: the front matter parses to a mapping with sane types."""
        content = json.loads(body)["content"]
        self.validated_cards.append(content)
        match = re.match(r"^\s*---\r?\n(.*?)\r?\n---", content, re.DOTALL)
        errors = []
        if match is None:
            return _json({"errors": [], "warnings": [{"message": "empty or missing yaml metadata in repo card"}]})
        try:
            metadata = yaml.safe_load(match.group(1))
        except yaml.YAMLError as error:
            metadata, errors = None, [{"message": f"invalid YAML: {error}"}]
        if not errors and not isinstance(metadata, dict):
            errors.append({"message": "metadata must be a YAML mapping"})
        if not errors:
            for key in ("library_name", "pipeline_tag", "license"):
                if key in metadata and not isinstance(metadata[key], str):
                    errors.append({"message": f'"{key}" must be a string'})
            for key in ("tags", "datasets", "metrics"):
                value = metadata.get(key, [])
                if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                    errors.append({"message": f'"{key}" must be a list of strings'})
            for base in [metadata["base_model"]] if isinstance(metadata.get("base_model"), str) else []:
                if not re.fullmatch(r"[\w.-]+/[\w.-]+|[\w.-]+", base):
                    errors.append({"message": f'"base_model" is not a model id: {base!r}'})
        if errors:
            return 400, {"Content-Type": "application/json"}, json.dumps({"errors": errors}).encode()
        return _json({"errors": [], "warnings": []})

    def _preupload(self, params, headers, body, **_):
        self._require_token(headers)
        repo = self._repo(params["repo"], headers)
        current = self._commit_at(repo, params["rev"]).files
        answers = []
        for entry in json.loads(body)["files"]:
            sample = base64.b64decode(entry["sample"])
            lfs = entry["path"].endswith(LFS_SUFFIXES) or entry["size"] > LFS_SIZE_THRESHOLD or b"\0" in sample
            existing = current.get(entry["path"])
            answers.append(
                {
                    "path": entry["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": existing.etag if existing is not None else None,
                }
            )
        return _json({"files": answers, "commitOid": repo.commits[-1].oid})

    def _lfs_batch(self, params, headers, body, **_):
        self._require_token(headers)
        self._repo(params["repo"], headers)
        request = json.loads(body)
        if request.get("operation") != "upload" or "basic" not in request.get("transfers", ["basic"]):
            raise HubError(400, "the fake hub only accepts basic LFS uploads")
        objects = []
        for obj in request["objects"]:
            answer = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.lfs_store:  # no actions = already uploaded
                answer["actions"] = {
                    "upload": {"href": f"{self.url}/lfs-upload/{obj['oid']}"},
                    "verify": {"href": f"{self.url}/lfs-verify/{obj['oid']}"},
                }
            objects.append(answer)
        return _json({"transfer": "basic", "objects": objects})

    def _lfs_upload(self, params, body, **_):
        if hashlib.sha256(body).hexdigest() != params["oid"]:
            raise HubError(400, "uploaded content does not match its sha256")
        self.lfs_store[params["oid"]] = body
        return 200, {}, b""

    def _lfs_verify(self, params, headers, body, **_):
        self._require_token(headers)
        request = json.loads(body)
        stored = self.lfs_store.get(params["oid"])
        if stored is None or request["oid"] != params["oid"] or request["size"] != len(stored):
            raise HubError(404, "LFS object not found")
        return _json({"success": True})

    def _commit(self, params, query, headers, body, **_):
        self._require_token(headers)
        repo = self._repo(params["repo"], headers)
        if params["rev"] != "main" or query.get("create_pr"):
            raise HubError(400, "the fake hub only commits to main (no branches, no pull requests)")
        if "x-ndjson" not in headers.get("content-type", ""):
            raise HubError(400, "commit payload must be NDJSON")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0]["key"] != "header":
            raise HubError(400, "the first NDJSON line must be the commit header")
        header = lines[0]["value"]
        if header.get("parentCommit") and header["parentCommit"] != repo.commits[-1].oid:
            raise HubError(412, "parent commit is not the head of main")
        files = dict(repo.commits[-1].files)
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, "regular files must be base64-encoded")
                files[value["path"]] = StoredFile(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                content = self.lfs_store.get(value["oid"])
                if content is None:
                    raise HubError(400, f"LFS object of {value['path']} was never uploaded")
                files[value["path"]] = StoredFile(content, lfs=True)
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
            elif key == "deletedFolder":
                files = {p: f for p, f in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            else:
                raise HubError(400, f"unknown commit operation {key!r}")
        commit = self._new_commit(repo, header["summary"], files)
        return _json(
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self.url}/{params['repo']}/commit/{commit.oid}",
                "pullRequestUrl": None,
            }
        )

    def _repo_info(self, params, headers, **_):
        repo = self._repo(params["repo"], headers)
        commit = self._commit_at(repo, params["rev"] or "main")
        card_data = _front_matter(commit.files.get("README.md"))
        return _json(
            {
                "id": params["repo"],
                "modelId": params["repo"],
                "sha": commit.oid,
                "private": repo.private,
                "tags": card_data.get("tags", []),
                "library_name": card_data.get("library_name"),
                "pipeline_tag": card_data.get("pipeline_tag"),
                "cardData": card_data,
                "siblings": [{"rfilename": path} for path in sorted(commit.files)],
            }
        )

    def _tree(self, params, query, headers, **_):
        repo = self._repo(params["repo"], headers)
        files = self._commit_at(repo, params["rev"]).files
        prefix = (params["path"] or "").strip("/")
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        below = {p: f for p, f in files.items() if not prefix or p.startswith(prefix + "/")}
        if prefix and not below:
            raise HubError(404, f"{prefix} does not exist", "EntryNotFound")
        entries, folders = [], set()
        for path in sorted(below):
            relative = path[len(prefix) + 1 :] if prefix else path
            parts = relative.split("/")
            for depth in range(1, len(parts)):
                folder = "/".join(filter(None, [prefix, *parts[:depth]]))
                if (recursive or depth == 1) and folder not in folders:
                    folders.add(folder)
                    entries.append({"type": "directory", "path": folder, "oid": git_blob_sha1(folder.encode())})
            if recursive or len(parts) == 1:
                entries.append(_tree_entry(path, files[path]))
        return _json(entries)

    def _resolve(self, params, headers, **_):
        repo = self._repo(params["repo"], headers)
        commit = self._commit_at(repo, params["rev"])
        stored = commit.files.get(params["path"])
        if stored is None:
            raise HubError(404, "Entry not found", "EntryNotFound")
        response_headers = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{git_blob_sha1(lfs_pointer(stored.content)) if stored.lfs else stored.etag}"',
            "Content-Type": "application/octet-stream",
        }
        if stored.lfs:
            response_headers["X-Linked-Etag"] = f'"{stored.etag}"'
            response_headers["X-Linked-Size"] = str(len(stored.content))
        return 200, response_headers, stored.content


def _tree_entry(path: str, stored: StoredFile) -> dict:
    if not stored.lfs:
        return {"type": "file", "path": path, "size": len(stored.content), "oid": git_blob_sha1(stored.content)}
    pointer = lfs_pointer(stored.content)
    return {
        "type": "file",
        "path": path,
        "size": len(stored.content),
        "oid": git_blob_sha1(pointer),
        "lfs": {"oid": stored.etag, "size": len(stored.content), "pointerSize": len(pointer)},
    }


def _front_matter(readme: StoredFile | None) -> dict:
    if readme is None:
        return {}
    match = re.match(r"^\s*---\r?\n(.*?)\r?\n---", readme.content.decode("utf-8"), re.DOTALL)
    return (yaml.safe_load(match.group(1)) or {}) if match else {}


def _json(payload) -> tuple[int, dict, bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def _error(error: HubError) -> tuple[int, dict, bytes]:
    headers = {"Content-Type": "application/json", "X-Error-Message": error.message}
    if error.code:
        headers["X-Error-Code"] = error.code
    return error.status, headers, json.dumps({"error": error.message, **error.extra}).encode()


def _make_handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _dispatch(self) -> None:
            url = urlsplit(self.path)
            body = self._read_body() if self.command in ("POST", "PUT") else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, response_headers, payload = hub.handle(
                self.command, unquote(url.path), parse_qs(url.query), headers, body
            )
            self.send_response(status)
            for key, value in response_headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_HEAD = _dispatch

        def log_message(self, *args) -> None:  # keep test output quiet; `hub.requests` has the log
            pass

    return Handler
