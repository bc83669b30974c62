"""Models on the Hugging Face Hub as sources: ``hf://ORG/MODEL[@REVISION]``.

huggingface_hub fetches what a conversion reads (the config, the tokenizer's files, the card,
the index and the shards it lists, never other weight files such as ``original/`` or
pickles) into its standard cache (``HF_HOME`` / ``HF_HUB_CACHE``), and credentials come from
where it finds them (``HF_TOKEN``, the stored login). ryzq never prints or writes them: its
errors are its own sentences, with no text of the server's.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ryzq._ryzq import RyzqError

PREFIX = "hf://"
_REPO = r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*"
_URL = re.compile(rf"^({_REPO})(?:@([\w.\-/]+))?$")
#: The files of a model repository a conversion reads besides the weights: the config, the
#: tokenizer's, the card and license (copied into the output).
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "README.md",
    "LICENSE",
)
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


@dataclass(frozen=True)
class HubModel:
    """A model fetched from the Hub: its repository, the commit it was read at, and the
    folder of the cache that holds it."""

    repo_id: str
    commit: str
    path: Path

    @property
    def url(self) -> str:
        return f"{PREFIX}{self.repo_id}@{self.commit}"


def is_hub(src: object) -> bool:
    return isinstance(src, str) and src.startswith(PREFIX)


def is_repo_id(repo_id: str) -> bool:
    """Whether ``repo_id`` is ``ORG/NAME`` as the Hub takes it: its characters, and at most 96
    of them, no ``--`` or ``..``, no name ending in ``-`` or ``.`` (huggingface_hub refuses
    the rest)."""
    return (
        re.fullmatch(_REPO, repo_id) is not None
        and len(repo_id) <= 96
        and "--" not in repo_id
        and ".." not in repo_id
        and not any(part.endswith(("-", ".")) for part in repo_id.split("/"))
    )


def _network_errors() -> tuple[type[BaseException], ...]:
    """The errors of the HTTP client huggingface_hub uses for a connection that fails (not
    OSError): the Hub unreachable, a timeout."""
    found = []
    for name in ("httpx2", "httpx"):
        module = sys.modules.get(name)
        if module is not None and isinstance(getattr(module, "TransportError", None), type):
            found.append(module.TransportError)
    return tuple(found)


def _why(err: BaseException) -> str:
    """What went wrong, in ryzq's words (never the client's text, which may hold a URL)."""
    name = type(err).__name__
    if name == "OfflineModeIsEnabled":
        return "HF_HUB_OFFLINE forbids reaching the Hub"
    if "Timeout" in name:
        return "the Hub did not answer in time"
    if isinstance(err, _network_errors()):
        return f"the Hub could not be reached at {_endpoint()} ({name})"
    return name


def _endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def parse(url: str) -> tuple[str, str | None]:
    """``hf://ORG/MODEL[@REVISION]`` as (repository id, revision or None)."""
    m = _URL.match(url.removeprefix(PREFIX))
    if not url.startswith(PREFIX) or not m or not is_repo_id(m.group(1)):
        raise RyzqError(f"{url}: not a Hub model; write hf://ORG/MODEL or hf://ORG/MODEL@REVISION")
    return m.group(1), m.group(2)


def _import() -> Any:
    try:
        import huggingface_hub
        from huggingface_hub import constants, errors, utils  # noqa: F401 (submodules)
    except ImportError as err:
        raise RyzqError(
            "reading models from the Hub needs huggingface_hub: pip install 'ryzq[hub]'"
        ) from err
    return huggingface_hub


@contextlib.contextmanager
def _bars(utils: Any, shown: bool) -> Iterator[None]:
    """huggingface_hub's download bars on or off for the call, then as they were."""
    was_off = utils.are_progress_bars_disabled()
    if shown:
        utils.enable_progress_bars()
    else:
        utils.disable_progress_bars()
    try:
        yield
    finally:
        if was_off:
            utils.disable_progress_bars()
        else:
            utils.enable_progress_bars()


@contextlib.contextmanager
def download_bars(shown: bool) -> Iterator[None]:
    """huggingface_hub's download bars on or off while the block runs (once for downloads
    that run on several threads)."""
    _import()
    from huggingface_hub import utils

    with _bars(utils, shown):
        yield


def wanted_files(listed: list[str], index: dict[str, Any] | None) -> list[str]:
    """Of a repository's files, those a conversion of its model reads: the top-level model
    files, and the index with its shards or the one weight file."""
    top = [f for f in listed if "/" not in f]
    chosen = [f for f in top if f in MODEL_FILES]
    if index is not None:
        shards = sorted(set(index.get("weight_map", {}).values()))
        nested = [s for s in shards if "/" in s]
        if nested:
            raise RyzqError(f"{INDEX} lists {nested[0]}, not a plain file name beside it")
        missing = [s for s in shards if s not in listed]
        if missing:
            raise RyzqError(f"{INDEX} lists {missing[0]}, which the repository does not hold")
        return [*chosen, INDEX, *shards]
    if SINGLE in top:
        return [*chosen, SINGLE]
    raise RyzqError(f"no {SINGLE} or {INDEX} at the top of the repository: no model to read")


def _read_index(path: Path, url: str) -> dict[str, Any]:
    """The repository's shard index; one error naming the model if it is not an index."""
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RyzqError(f"{url}: its {INDEX} is not JSON ({err})") from None
    if not isinstance(index, dict) or not isinstance(index.get("weight_map", {}), dict):
        raise RyzqError(f"{url}: its {INDEX} has no weight_map object")
    return index


@contextlib.contextmanager
def _errors(at: str, revision: str | None) -> Iterator[None]:
    """huggingface_hub's errors as ryzq's, naming the model ``at``; never the server's text."""
    from huggingface_hub import errors

    try:
        yield
    except errors.GatedRepoError:
        raise RyzqError(
            f"{PREFIX}{at}: a gated repository this account has no access to (ask for it on its "
            "page, then log in or set HF_TOKEN)"
        ) from None
    except errors.RepositoryNotFoundError:
        raise RyzqError(
            f"{PREFIX}{at}: no such model repository (or a private one this account cannot see)"
        ) from None
    except errors.RevisionNotFoundError:
        raise RyzqError(f"{PREFIX}{at}: the repository has no revision {revision}") from None
    except errors.LocalEntryNotFoundError:
        raise RyzqError(
            f"{PREFIX}{at}: not in the Hub's cache, and HF_HUB_OFFLINE forbids fetching it"
        ) from None
    except errors.HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        raise RyzqError(f"{PREFIX}{at}: the Hub answered HTTP {status}") from None
    except (OSError, *_network_errors()) as err:
        raise RyzqError(
            f"{PREFIX}{at}: fetching it failed: {getattr(err, 'strerror', None) or _why(err)}"
        ) from None


def _listing(
    hub: Any, repo_id: str, revision: str | None, at: str
) -> tuple[str, list[str], list[str]]:
    """The commit ``revision`` names, the files a conversion reads, and of those the weights."""
    info = hub.HfApi().model_info(repo_id, revision=revision)
    listed = [s.rfilename for s in info.siblings or []]
    index = None
    if INDEX in listed:
        index_path = hub.hf_hub_download(repo_id, INDEX, revision=info.sha)
        index = _read_index(Path(index_path), f"{PREFIX}{at}")
    try:
        files = wanted_files(listed, index)
    except RyzqError as err:
        raise RyzqError(f"{PREFIX}{at}: {err}") from None
    weights = [f for f in files if f.endswith(".safetensors")]
    return info.sha, files, weights


def _snapshot(hub: Any, repo_id: str, commit: str, files: list[str], at: str) -> Path:
    """Fetches ``files`` of ``repo_id`` at ``commit`` into the cache; returns the snapshot."""
    path = Path(hub.snapshot_download(repo_id, revision=commit, allow_patterns=files))
    absent = [f for f in files if not (path / f).is_file()]
    if absent:
        raise RyzqError(f"{PREFIX}{at}: the Hub listed {absent[0]} but did not give it")
    return path


def _named(repo_id: str, revision: str | None) -> str:
    """The repository as errors name it: with its revision where the URL gave one."""
    return repo_id + (f"@{revision}" if revision else "")


def fetch(url: str, *, progress: bool = False) -> HubModel:
    """Fetches the model ``url`` names into the Hub's cache (from the cache alone where
    ``HF_HUB_OFFLINE=1``) and returns where it is."""
    repo_id, revision = parse(url)
    hub = _import()
    from huggingface_hub import constants, utils

    at = _named(repo_id, revision)
    with _errors(at, revision), _bars(utils, progress):
        if constants.is_offline_mode():
            path = Path(hub.snapshot_download(repo_id, revision=revision, local_files_only=True))
            # A snapshot holds what was fetched into it, perhaps not all the shards.
            index_file = path / INDEX
            if index_file.is_file():
                listed = _read_index(index_file, f"{PREFIX}{at}").get("weight_map", {}).values()
                absent = sorted(s for s in set(listed) if not (path / s).is_file())
                if absent:
                    raise RyzqError(
                        f"{PREFIX}{at}: the Hub's cache holds it only in part (not "
                        f"{absent[0]}), and HF_HUB_OFFLINE forbids fetching the rest"
                    )
        else:
            commit, files, _ = _listing(hub, repo_id, revision, at)
            path = _snapshot(hub, repo_id, commit, files, at)
    return HubModel(repo_id=repo_id, commit=path.name, path=path)


@dataclass(frozen=True)
class HubStream:
    """A model on the Hub fetched weight file by weight file, so that a conversion can start on
    the first while the next downloads: every other file it reads is in the cache already
    (``model.path``), and each weight file's header can be read before the file is."""

    model: HubModel
    #: the weight files, in the order they are fetched
    weights: tuple[str, ...]

    def _at(self) -> str:
        return f"{self.model.repo_id}@{self.model.commit}"

    def cached(self, name: str) -> Path | None:
        """Where the cache holds weight file ``name`` already, if it does."""
        hub = _import()
        found = hub.try_to_load_from_cache(self.model.repo_id, name, revision=self.model.commit)
        return Path(found) if isinstance(found, str) else None

    def header(self, name: str) -> bytes:
        """The first bytes of weight file ``name``: its length field and its JSON header, by
        range requests, as the safetensors format lays them out."""
        size = int.from_bytes(self._range(name, 0, 8), "little")
        if size > 100_000_000:
            raise RyzqError(f"{PREFIX}{self._at()}: {name}: a header of {size} bytes")
        return self._range(name, 0, 8 + size)

    def _range(self, name: str, start: int, end: int) -> bytes:
        hub = _import()
        from huggingface_hub import utils

        url = hub.hf_hub_url(self.model.repo_id, name, revision=self.model.commit)
        headers = utils.build_hf_headers(headers={"Range": f"bytes={start}-{end - 1}"})
        with _errors(self._at(), self.model.commit):
            data = bytearray()
            # Streamed and cut, should a server send the whole file for a range.
            with utils.get_session().stream(
                "GET", url, headers=headers, follow_redirects=True
            ) as response:
                utils.hf_raise_for_status(response)
                skip = start if response.status_code == 200 else 0
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) >= skip + end - start:
                        break
        data = bytes(data[skip : skip + end - start])
        if len(data) != end - start:
            raise RyzqError(
                f"{PREFIX}{self._at()}: {name} ends at {len(data)} bytes, inside its header"
            )
        return data

    def download(self, name: str) -> Path:
        """Fetches weight file ``name`` into the cache; returns where it is. Its download bar
        is on or off as :func:`download_bars` set it."""
        hub = _import()
        with _errors(self._at(), self.model.commit):
            return Path(hub.hf_hub_download(self.model.repo_id, name, revision=self.model.commit))


def open_stream(url: str, *, progress: bool = False) -> HubStream | None:
    """The model ``url`` names, with every file but its weights fetched into the cache, for
    fetching the weights one by one (:class:`HubStream`); ``None`` where ``HF_HUB_OFFLINE=1``
    (:func:`fetch` then reads the cache)."""
    repo_id, revision = parse(url)
    hub = _import()
    from huggingface_hub import constants, utils

    if constants.is_offline_mode():
        return None
    at = _named(repo_id, revision)
    with _errors(at, revision), _bars(utils, progress):
        commit, files, weights = _listing(hub, repo_id, revision, at)
        others = [f for f in files if f not in weights]
        path = _snapshot(hub, repo_id, commit, others, at)
    model = HubModel(repo_id=repo_id, commit=commit, path=path)
    return HubStream(model=model, weights=tuple(weights))


def check_repo_id(repo_id: str) -> None:
    if not is_repo_id(repo_id):
        raise RyzqError(f"{repo_id}: not a Hub repository; write ORG/NAME")


def push(path: str | Path, repo_id: str, *, private: bool = False, message: str) -> str:
    """Uploads the finished output ``path`` (a model folder, or one file) to the model
    repository ``repo_id``, creating it (``private`` if asked) where it does not exist; returns
    the commit's URL."""
    check_repo_id(repo_id)
    hub = _import()
    from huggingface_hub import errors

    path = Path(path)
    try:
        api = hub.HfApi()
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if path.is_dir():
            commit = api.upload_folder(
                folder_path=path, repo_id=repo_id, repo_type="model", commit_message=message
            )
        else:
            commit = api.upload_file(
                path_or_fileobj=path,
                path_in_repo=path.name,
                repo_id=repo_id,
                repo_type="model",
                commit_message=message,
            )
    except errors.HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        why = {401: "not logged in, or the token is refused", 403: "no right to write there"}
        raise RyzqError(
            f"{repo_id}: the upload of {path} failed: HTTP {status}"
            + (f" ({why[status]})" if status in why else "")
        ) from None
    except (OSError, *_network_errors()) as err:
        raise RyzqError(
            f"{repo_id}: the upload of {path} failed: {getattr(err, 'strerror', None) or _why(err)}"
        ) from None
    return str(getattr(commit, "commit_url", commit))
