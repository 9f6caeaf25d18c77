"""`push_to_hub`: uploads an `ssl-hf export` folder to the Hugging Face Hub in one commit."""

import json
import logging
import os
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RevisionNotFoundError


try:  # huggingface_hub 2.x talks through httpx2
    from httpx2 import TransportError
    from huggingface_hub.errors import HfUriError
except ImportError:  # pragma: no cover  (1.x: httpx, and no HfUriError)
    from httpx import TransportError

    class HfUriError(Exception):
        """Never raised by huggingface_hub 1.x."""


logger = logging.getLogger("ssl_hf")

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
_OFFLINE = "Offline mode is on (HF_HUB_OFFLINE=1): unset HF_HUB_OFFLINE (or set it to 0) to push to the Hub."
_LOGIN_HINT = (
    "run `hf auth login` (or `huggingface-cli login`), set the HF_TOKEN environment variable, or pass --token"
)


class PushError(ValueError):
    """A push that cannot proceed; the message names the problem and the fix."""


def export_files(export_dir: str | os.PathLike) -> list[Path]:
    """The files of an export that `push_to_hub` uploads.

    Args:
        export_dir: An `ssl-hf export` output folder.

    Returns:
        Every file under the folder (sub-folders included), sorted, except hidden files and folders and `*.tmp`.

    Raises:
        PushError: The folder is not an export (no `config.json` or no `model.safetensors`), or is a run's pre-training
            model or checkpoint (which needs `import ssl_hf`): export it first.
    """
    from .training.checkpoints import export_first

    root = Path(export_dir)
    problem = export_first(root, "push")
    if problem:
        raise PushError(problem)
    missing = [] if (root / "config.json").is_file() else ["config.json"]
    if not any((root / name).is_file() for name in WEIGHT_FILES):
        missing.append("model.safetensors")
    if missing:
        what = "does not exist" if not root.is_dir() else f"has no {' and no '.join(missing)}"
        raise PushError(
            f"{root} is not an ssl-hf export: it {what}. Export a run first with "
            f"`ssl-hf export RUN/final --output_dir {root}`, then push that folder."
        )
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
        and not path.name.endswith(".tmp")
    )


def default_commit_message(export_dir: str | os.PathLike) -> str:
    """`Upload <method> encoder (ssl_hf export)`: the method from `training_args.json`, else the config's model_type.

    Args:
        export_dir: An `ssl-hf export` output folder.

    Returns:
        The commit message used when none is given.
    """
    root = Path(export_dir)
    method = None
    if (root / "training_args.json").is_file():
        method = json.loads((root / "training_args.json").read_text()).get("method")
    if not method:
        method = json.loads((root / "config.json").read_text()).get("model_type", "model")
    return f"Upload {method} encoder (ssl_hf export)"


def _offline() -> bool:
    """Offline mode as huggingface_hub saw it at import time, or as the environment says now."""
    return (
        constants.is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").upper() in constants.ENV_VARS_TRUE_VALUES
    )


def push_to_hub(
    export_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Uploads an `ssl-hf export` folder to a Hub model repo (created if missing) in a single commit.

    Args:
        export_dir: The export folder (`config.json`, `model.safetensors`, `preprocessor_config.json`, `README.md`,
            and whatever else it holds; hidden files and `*.tmp` are skipped).
        repo_id: `ORG/NAME` (or `NAME` in the token owner's namespace).
        private: Create the repo private. If False the namespace's default visibility applies (public unless the
            organization defaults to private). Ignored when the repo already exists.
        revision: Branch to commit to (default `main`); created from `main` when it does not exist.
        commit_message: Defaults to `Upload <method> encoder (ssl_hf export)`.
        token: A Hub token with write access; defaults to `HF_TOKEN`, then the token saved by `hf auth login`.
        endpoint: Hub URL; defaults to the `HF_ENDPOINT` environment variable, then `https://huggingface.co`.

    Returns:
        The URL of the commit.

    Raises:
        PushError: Not an export, no token, offline mode on, permission denied, revision or repo not found,
            endpoint unreachable, or any other refusal from the Hub.
    """
    files = export_files(export_dir)
    if _offline():
        raise PushError(_OFFLINE)
    token = token or get_token()
    if not token:
        raise PushError(f"No Hugging Face token found: {_LOGIN_HINT} (the token needs write access).")
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    root = Path(export_dir)
    api = HfApi(endpoint=endpoint, token=token, library_name="ssl_hf")
    operations = [CommitOperationAdd(path.relative_to(root).as_posix(), path) for path in files]
    branch = revision or constants.DEFAULT_REVISION
    try:
        try:
            api.create_repo(repo_id, private=True if private else None, repo_type="model", exist_ok=True)
        except HfUriError:
            # huggingface_hub 2.4: when creation is refused (401/402/403) but the repo exists and is readable, it
            # returns `RepoUrl(f"{endpoint}/{repo_id}")` without the endpoint, which fails to parse for any endpoint
            # but the import-time one. The repo exists: go on, the upload tells whether we may write to it.
            logger.debug("create_repo: %s exists on %s", repo_id, endpoint)
        if revision and revision != constants.DEFAULT_REVISION and not revision.startswith("refs/"):
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        logger.info("Uploading %d files of %s to %s/%s (%s)", len(files), root, endpoint, repo_id, branch)
        info = api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message or default_commit_message(root),
            repo_type="model",
            revision=revision,
        )
    except OfflineModeIsEnabled as err:
        raise PushError(_OFFLINE) from err
    except TransportError as err:
        raise PushError(
            f"Cannot reach the Hub at {endpoint} ({type(err).__name__}: {err}). Check your network connection, "
            "or the --endpoint / HF_ENDPOINT setting."
        ) from err
    except RevisionNotFoundError as err:
        raise PushError(
            f"Revision '{branch}' does not exist on {repo_id}: give a branch name (created from main when missing), "
            "an existing pull-request ref, or omit --revision to push to main."
        ) from err
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        detail = err.server_message or str(err).strip().splitlines()[0]
        if status == 401:
            raise PushError(f"The Hub at {endpoint} rejected the token ({detail}): {_LOGIN_HINT}.") from err
        if status == 403:
            raise PushError(
                f"Permission denied on {repo_id} at {endpoint} ({detail}): the repo belongs to a namespace your "
                "token cannot write to. Use a token with write access to it, or push to a repo_id under your own "
                "user or organization."
            ) from err
        raise PushError(f"The Hub at {endpoint} refused the push to {repo_id}: {detail}") from err
    return info.commit_url
