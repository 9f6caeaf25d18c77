"""`push_to_hub` / `ssl-hf push`: the real huggingface_hub client against a small Hub-API server on 127.0.0.1."""

import base64
import hashlib
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import huggingface_hub.constants
import pytest
from conftest import tiny_mae_config
from PIL import Image

from ssl_hf import MAEForPreTraining
from ssl_hf.cli import main
from ssl_hf.export import export_pretrained
from ssl_hf.hub import PushError, push_to_hub


TOKEN = "hf_test_token_123"
REPO_OP = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<op>preupload|commit|branch|revision)/(?P<rev>[^/]+)$")


class FakeHub:
    """The Hub API endpoints `create_repo`, `create_branch` and `create_commit` call, state kept in memory.

    `repos` maps repo id -> {"private": bool, "branches": {name: {path: bytes}}, "commits": [...]}. Repos in
    `forbidden` answer 403 to creation, preupload and commit (someone else's namespace); if also in `repos`, they
    exist and are readable, as a public repo of another user.
    """

    def __init__(self):
        self.repos: dict[str, dict] = {}
        self.forbidden: set[str] = set()
        self.requests: list[tuple[str, str, dict]] = []  # (method, path, lower-cased headers)
        self.created: list[dict] = []  # payloads of /api/repos/create
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status: int, body: dict, error_code: str | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if error_code:
                    self.send_header("X-Error-Code", error_code)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                hub.requests.append(("GET", self.path, {k.lower(): v for k, v in self.headers.items()}))
                path = urlsplit(self.path).path
                match = REPO_OP.match(path)
                repo_id = match["repo"] if match else path.removeprefix("/api/models/")
                if path == "/api/whoami-v2":
                    return self._reply(200, {"name": "tester", "type": "user"})
                if path.startswith("/api/models/") and repo_id in hub.repos:
                    return self._reply(200, {"id": repo_id, "sha": "0" * 40, "private": hub.repos[repo_id]["private"]})
                return self._reply(404, {"error": "Repository not found"}, "RepoNotFound")

            def do_POST(self):
                hub.requests.append(("POST", self.path, {k.lower(): v for k, v in self.headers.items()}))
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                path = urlsplit(self.path).path
                if path == "/api/repos/create":
                    payload = json.loads(body)
                    hub.created.append(payload)
                    repo_id = f"{payload['organization']}/{payload['name']}"
                    if repo_id in hub.forbidden:
                        return self._reply(403, {"error": "You don't have the rights to create a model here"})
                    if repo_id in hub.repos:
                        url = f"{hub.url}/{repo_id}"  # the client reads `url` from the 409 too
                        return self._reply(409, {"error": "You already created this model repo", "url": url})
                    private = payload.get("visibility") == "private"
                    hub.repos[repo_id] = {"private": private, "branches": {"main": {}}, "commits": []}
                    return self._reply(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})
                if path == "/api/validate-yaml":
                    return self._reply(200, {"errors": [], "warnings": []})
                match = REPO_OP.match(path)
                if not match:
                    return self._reply(404, {"error": f"no route {path}"})
                repo_id, op, rev = match["repo"], match["op"], unquote(match["rev"])
                if repo_id in hub.forbidden:
                    return self._reply(403, {"error": "You don't have write access to this repo"})
                repo = hub.repos.get(repo_id)
                if repo is None:
                    return self._reply(404, {"error": "Repository not found"}, "RepoNotFound")
                if op == "branch":
                    if rev in repo["branches"]:
                        return self._reply(409, {"error": "Branch already exists"})
                    repo["branches"][rev] = dict(repo["branches"]["main"])
                    return self._reply(200, {})
                if rev not in repo["branches"]:
                    return self._reply(404, {"error": f"Invalid rev id: {rev}"}, "RevisionNotFound")
                if op == "preupload":
                    files = json.loads(body)["files"]
                    answer = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                    return self._reply(200, {"files": answer})
                lines = [json.loads(line) for line in body.decode().splitlines() if line]
                header, operations = lines[0], lines[1:]
                assert header["key"] == "header"
                assert {op["key"] for op in operations} == {"file"}  # every file inline, none LFS
                files = {op["value"]["path"]: base64.b64decode(op["value"]["content"]) for op in operations}
                repo["branches"][rev].update(files)
                oid = hashlib.sha1(body).hexdigest()
                repo["commits"].append({"revision": rev, "message": header["value"]["summary"], "files": files})
                url = f"{hub.url}/{repo_id}/commit/{oid}"
                return self._reply(200, {"success": True, "commitOid": oid, "commitUrl": url})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A running FakeHub, and an environment where huggingface_hub is online with no ambient token or endpoint."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    # conftest.py set HF_HUB_OFFLINE=1 before huggingface_hub was imported, which read it (and HF_HOME) into constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    server = FakeHub()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    """A real tiny MAE export (with training_args.json), plus a PNG plot, a hidden file and a `.tmp` leftover."""
    root = tmp_path_factory.mktemp("push")
    MAEForPreTraining(tiny_mae_config()).save_pretrained(root / "final")
    (root / "final" / "training_args.json").write_text(json.dumps({"method": "mae", "max_steps": 10}))
    out = export_pretrained(root / "final", root / "export")
    Image.new("RGB", (8, 8), (200, 30, 30)).save(out / "loss.png")
    (out / ".DS_Store").write_bytes(b"\0junk")
    (out / "model.safetensors.tmp").write_bytes(b"partial")
    return out


EXPECTED = {
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "README.md",
    "training_args.json",
    "loss.png",
}


def _assert_uploaded(hub: FakeHub, repo_id: str, export_dir: Path, revision: str = "main") -> dict:
    commit = hub.repos[repo_id]["commits"][-1]
    assert commit["revision"] == revision
    assert set(commit["files"]) == EXPECTED
    for name, data in commit["files"].items():
        assert data == (export_dir / name).read_bytes(), name
    return commit


def test_push_uploads_the_export_byte_for_byte(hub, export_dir):
    url = push_to_hub(export_dir, "org/tiny-mae", private=True, token=TOKEN, endpoint=hub.url)

    repo = hub.repos["org/tiny-mae"]
    assert repo["private"] is True
    assert hub.created == [{"name": "tiny-mae", "organization": "org", "visibility": "private", "type": "model"}]
    assert len(repo["commits"]) == 1  # one commit, and main was not re-created as a branch
    commit = _assert_uploaded(hub, "org/tiny-mae", export_dir)
    assert commit["message"] == "Upload mae encoder (ssl_hf export)"
    assert url.startswith(f"{hub.url}/org/tiny-mae/commit/")
    assert not any("/branch/" in path for _, path, _ in hub.requests)
    assert all(headers["authorization"] == f"Bearer {TOKEN}" for _, _, headers in hub.requests)
    assert "ssl_hf" in hub.requests[0][2]["user-agent"]


def test_push_to_a_new_branch_with_env_token_and_endpoint(hub, export_dir, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    push_to_hub(export_dir, "org/tiny-mae")
    url = push_to_hub(export_dir, "org/tiny-mae", revision="exp/v1", commit_message="Second run")  # repo exists

    repo = hub.repos["org/tiny-mae"]
    assert repo["private"] is False
    assert "visibility" not in hub.created[0]  # not --private: the namespace's default visibility
    assert [c["revision"] for c in repo["commits"]] == ["main", "exp/v1"]
    commit = _assert_uploaded(hub, "org/tiny-mae", export_dir, revision="exp/v1")
    assert commit["message"] == "Second run"
    assert url.startswith(f"{hub.url}/org/tiny-mae/commit/")
    assert ("POST", "/api/models/org/tiny-mae/branch/exp%2Fv1") in {(m, p) for m, p, _ in hub.requests}
    assert all(headers["authorization"] == "Bearer hf_from_env" for _, _, headers in hub.requests)


def test_cli_push(hub, export_dir, capsys):
    main(["push", str(export_dir), "--repo_id", "org/cli", "--token", TOKEN, "--endpoint", hub.url, "--private"])

    assert hub.repos["org/cli"]["private"] is True
    _assert_uploaded(hub, "org/cli", export_dir)
    assert f"{hub.url}/org/cli/commit/" in capsys.readouterr().out


def test_no_token_names_the_ways_to_log_in(hub, export_dir):
    with pytest.raises(PushError, match="No Hugging Face token") as err:
        push_to_hub(export_dir, "org/tiny-mae", endpoint=hub.url)
    assert all(hint in str(err.value) for hint in ("hf auth login", "huggingface-cli login", "HF_TOKEN", "--token"))
    assert hub.requests == []


@pytest.mark.parametrize("where", ["env", "constants"])
def test_offline_mode_says_unset_it(hub, export_dir, monkeypatch, where):
    if where == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PushError, match="unset HF_HUB_OFFLINE"):
        push_to_hub(export_dir, "org/tiny-mae", token=TOKEN, endpoint=hub.url)
    assert hub.requests == []


@pytest.mark.parametrize("exists", [False, True])
def test_forbidden_repo_is_a_permission_error(hub, export_dir, capsys, exists):
    hub.forbidden.add("someone/else")
    if exists:  # someone else's public repo: creation answers 403, the client then sees it exists, the upload 403s
        hub.repos["someone/else"] = {"private": False, "branches": {"main": {}}, "commits": []}
    argv = ["push", str(export_dir), "--repo_id", "someone/else", "--token", TOKEN, "--endpoint", hub.url]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Permission denied on someone/else" in err
    assert "write access" in err
    if exists:
        assert any("/preupload/" in path for _, path, _ in hub.requests)


def test_unknown_pull_request_ref(hub, export_dir):
    with pytest.raises(PushError, match="Revision 'refs/pr/7' does not exist on org/tiny-mae"):
        push_to_hub(export_dir, "org/tiny-mae", revision="refs/pr/7", token=TOKEN, endpoint=hub.url)


@pytest.mark.parametrize("remove", ["config.json", "model.safetensors", "folder"])
def test_not_an_export(hub, export_dir, tmp_path, remove):
    folder = tmp_path / "not_export"
    if remove != "folder":
        folder.mkdir()
        for name in {"config.json", "model.safetensors"} - {remove}:
            (folder / name).write_bytes((export_dir / name).read_bytes())
    with pytest.raises(PushError, match="is not an ssl-hf export") as err:
        push_to_hub(folder, "org/tiny-mae", token=TOKEN, endpoint=hub.url)
    assert ("does not exist" if remove == "folder" else f"has no {remove}") in str(err.value)
    assert "ssl-hf export" in str(err.value)
    assert hub.requests == []


def test_unreachable_endpoint_is_named(hub, export_dir):
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.raises(PushError, match=f"Cannot reach the Hub at {re.escape(endpoint)}"):
        push_to_hub(export_dir, "org/tiny-mae", token=TOKEN, endpoint=endpoint)


@pytest.mark.parametrize("folder", ["final", "checkpoint"])
def test_a_pretraining_folder_is_refused_with_the_export_command(hub, tmp_path, folder):
    """A run's final/ passes the file check (config.json + safetensors) but needs `import ssl_hf`; a checkpoint too."""
    path = tmp_path / "run" / "final"
    MAEForPreTraining(tiny_mae_config()).save_pretrained(path)
    if folder == "checkpoint":
        path = tmp_path / "run" / "checkpoints" / "step_2"
        path.mkdir(parents=True)
        (path / "model.safetensors").write_bytes((tmp_path / "run" / "final" / "model.safetensors").read_bytes())
        (path / "ssl_hf_state.json").write_text(json.dumps({"state": {"step": 2}}))
    with pytest.raises(PushError, match="Export first") as err:
        push_to_hub(path, "org/tiny-mae", token=TOKEN, endpoint=hub.url)
    suggested = tmp_path / "run" / ("export" if folder == "final" else "export_step_2")
    assert f"ssl-hf export {path} --output_dir {suggested}" in str(err.value)
    assert hub.requests == []
