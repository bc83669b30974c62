"""ryzq.hub: models on the Hub as sources, through huggingface_hub's own code, against a cache
the test lays out as huggingface_hub does (``refs/main``, ``snapshots/<commit>/`` whose files
link into ``blobs/``), with ``HF_HUB_OFFLINE=1``. Each run is a ``ryzq`` process of its own:
huggingface_hub reads its settings from the environment when it is first imported.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ryzq
from checkpoints import lay_out_hub_cache, make_folder
from hub_server import HubServer, Repository
from ryzq.cli import main
from ryzq.hub import check_repo_id, parse, wanted_files

REPO = "some-org/BitNet-tiny"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_ThisIsNotARealTokenButMustNeverBeWritten"


def run(*args, cache: Path, endpoint: str | None = None) -> subprocess.CompletedProcess:
    """``ryzq ARGS``: offline, or against the Hub at ``endpoint``."""
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_TOKEN=TOKEN, HF_HUB_DISABLE_XET="1")
    env.pop("HF_HOME", None)
    if endpoint is None:
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env.pop("HF_HUB_OFFLINE", None)
        env["HF_ENDPOINT"] = endpoint
    return subprocess.run(
        [sys.executable, "-m", "ryzq", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


@pytest.fixture
def hub_client():
    """huggingface_hub, the Hub's client, which the tests run: a skip without it, except
    where the real clients are required (CI)."""
    try:
        import huggingface_hub
    except ImportError:
        if os.environ.get("RYZQ_REQUIRE_INTEROP"):
            raise
        pytest.skip("needs the Hub's client: pip install 'ryzq[hub]'")
    return huggingface_hub


@pytest.fixture
def hub(tmp_path, hub_client):
    folder = tmp_path / "model"
    make_folder(folder, 2)
    cache = tmp_path / "cache"
    snapshot = lay_out_hub_cache(cache, REPO, folder, COMMIT)
    return folder, cache, snapshot


def every_byte(paths) -> bytes:
    return b"".join(
        p.read_bytes() for top in paths for p in sorted(Path(top).rglob("*")) if p.is_file()
    )


def test_a_cached_hub_model_converts_as_its_folder_does(hub, tmp_path):
    folder, cache, snapshot = hub
    dst, report = tmp_path / "out", tmp_path / "report.json"
    done = run("quantize", f"hf://{REPO}", dst, "--report", report, "--quiet", cache=cache)
    assert done.returncode == 0, done.stderr
    local = tmp_path / "local"
    ryzq.quantize_model(folder, local)
    names = sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file())
    assert names == sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
    for name in names:
        if name != "README.md":  # the card names its source
            assert (dst / name).read_bytes() == (local / name).read_bytes(), name
    saved = json.loads(report.read_text())
    assert saved["source"] == {"hub": REPO, "commit": COMMIT, "url": f"hf://{REPO}@{COMMIT}"}
    card = (dst / "README.md").read_text()
    assert f'base_model: "{REPO}"' in card and f"`hf://{REPO}@{COMMIT}`" in card
    # The credentials are nowhere: not in the output, the report, or what was printed.
    assert TOKEN.encode() not in every_byte([dst, report])
    assert TOKEN not in done.stdout + done.stderr
    # The cache is the input: untouched.
    assert sorted(p.name for p in snapshot.iterdir()) == sorted(p.name for p in folder.iterdir())


def test_a_revision_names_the_commit(hub, tmp_path):
    _, cache, _ = hub
    dst = tmp_path / "out"
    done = run("quantize", f"hf://{REPO}@{COMMIT}", dst, "--layout", "t1", "--quiet", cache=cache)
    assert done.returncode == 0, done.stderr
    assert json.loads((dst / "config.json").read_text())["quantization_config"]["layout"] == "t1"


def test_what_the_cache_lacks_offline_is_one_error_and_nothing_written(hub, tmp_path):
    _, cache, _ = hub
    dst = tmp_path / "out"
    done = run("quantize", "hf://some-org/not-here", dst, cache=cache)
    assert done.returncode == 2
    assert done.stderr == (
        "ryzq: error: hf://some-org/not-here: not in the Hub's cache, and HF_HUB_OFFLINE "
        "forbids fetching it\n"
    )
    assert not dst.exists()


@pytest.mark.parametrize("url", ["hf://", "hf://just-a-name", "hf://a/b/c", "hf://a/b@"])
def test_a_malformed_hub_url_is_refused(url):
    with pytest.raises(ryzq.RyzqError, match="not a Hub model; write hf://ORG/MODEL"):
        parse(url)


def test_only_what_the_model_needs_is_fetched():
    listed = [
        "README.md",
        "config.json",
        "tokenizer.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "original/consolidated.00.pth",
        "pytorch_model.bin",
        "other.safetensors",
        "extra/notes.txt",
    ]
    index = {
        "weight_map": {
            "a": "model-00002-of-00002.safetensors",
            "b": "model-00001-of-00002.safetensors",
        }
    }
    assert wanted_files(listed, index) == [
        "README.md",
        "config.json",
        "tokenizer.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    assert wanted_files(["config.json", "model.safetensors", "x.bin"], None) == [
        "config.json",
        "model.safetensors",
    ]
    with pytest.raises(ryzq.RyzqError, match=r"lists model-00002-of-00002\.safetensors"):
        wanted_files(listed[:5], index)
    with pytest.raises(ryzq.RyzqError, match=r"no model\.safetensors or"):
        wanted_files(["config.json", "pytorch_model.bin"], None)


@pytest.fixture
def served(tmp_path, hub_client):
    """A repository as people publish them: the model's files, and more that it does not
    need (``original/`` pickles, another weight file)."""
    folder = tmp_path / "repo"
    make_folder(folder, 2)
    (folder / "original").mkdir()
    (folder / "original" / "consolidated.00.pth").write_bytes(b"\x80\x04 a pickle")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04 another")
    return folder


def test_a_hub_model_is_fetched_with_only_what_it_needs_then_converted(served, tmp_path):
    repos = {REPO: Repository(REPO, COMMIT, served)}
    cache, dst, report = tmp_path / "cache", tmp_path / "out", tmp_path / "report.json"
    with HubServer(repos) as hub:
        done = run(
            "quantize",
            f"hf://{REPO}",
            dst,
            "--report",
            report,
            "--quiet",
            cache=cache,
            endpoint=hub.url,
        )
        assert done.returncode == 0, done.stderr
        fetched = hub.fetched()
        authorized = {auth for _, path, auth in hub.requests if REPO in path}
    assert fetched == sorted(
        [
            "config.json",
            "tokenizer.json",
            "model.safetensors.index.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
        ]
    )
    # The token went to the Hub with every request for the repository, as huggingface_hub
    # sends it, and nowhere else.
    assert authorized == {f"Bearer {TOKEN}"}
    assert TOKEN.encode() not in every_byte([dst, report])
    assert TOKEN not in done.stdout + done.stderr
    # Into the standard cache, as huggingface_hub lays it out.
    snapshot = cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT
    assert (snapshot / "config.json").is_symlink()
    local = tmp_path / "local"
    ryzq.quantize_model(snapshot, local)
    for name in ("model.safetensors.index.json", "model-00001-of-00002.safetensors"):
        assert (dst / name).read_bytes() == (local / name).read_bytes()
    assert json.loads(report.read_text())["source"]["commit"] == COMMIT
    # Again: from the cache, with no byte downloaded twice.
    with HubServer(repos) as hub:
        again = run(
            "quantize", f"hf://{REPO}", tmp_path / "again", "--quiet", cache=cache, endpoint=hub.url
        )
        assert again.returncode == 0, again.stderr
        assert hub.fetched() == []


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("hf://some-org/nothing", "no such model repository (or a private one"),
        (f"hf://{REPO}@v9", "the repository has no revision v9"),
        ("hf://gated-org/model", "a gated repository this account has no access to"),
    ],
)
def test_hub_errors_are_one_line_and_leave_nothing(served, tmp_path, url, says):
    repos = {
        REPO: Repository(REPO, COMMIT, served),
        "gated-org/model": Repository("gated-org/model", COMMIT, served, gated=True),
    }
    dst = tmp_path / "out"
    with HubServer(repos) as hub:
        done = run("quantize", url, dst, cache=tmp_path / "cache", endpoint=hub.url)
    assert done.returncode == 2
    assert done.stderr.startswith(f"ryzq: error: {url}: {says}"), done.stderr
    assert done.stderr.count("\n") == 1 and TOKEN not in done.stderr
    assert not dst.exists()


def test_push_to_hub_uploads_the_finished_output(tmp_path, hub_client):
    src, dst = tmp_path / "src", tmp_path / "out"
    make_folder(src, 2)
    with HubServer({}) as hub:
        done = run(
            "quantize",
            src,
            dst,
            "--push-to-hub",
            "me/tiny-ternary",
            "--private",
            cache=tmp_path / "cache",
            endpoint=hub.url,
        )
        assert done.returncode == 0, done.stderr
        created, commits, messages = hub.created, hub.commits, hub.messages
        tokens = {auth for method, _, auth in hub.requests if method == "POST"}
    assert created == [("me/tiny-ternary", True)]
    assert len(commits) == 1 and commits[0][0] == "me/tiny-ternary"
    files = {str(p.relative_to(dst)): p.read_bytes() for p in dst.rglob("*") if p.is_file()}
    assert commits[0][1] == files  # every file, byte for byte, the card included
    assert "README.md" in files
    assert tokens == {f"Bearer {TOKEN}"}
    # The source by its name: its local path would show in a public repository.
    assert messages == [f"ryzq {ryzq.__version__}: bitnet (absmean per tensor) from src"]
    assert f"uploaded {dst} to me/tiny-ternary: " in done.stdout
    assert TOKEN not in done.stdout + done.stderr


def test_push_to_hub_of_one_file(tmp_path, hub_client):
    from ryzq.synthetic import synthesize_checkpoint

    src, dst = tmp_path / "m.safetensors", tmp_path / "q.safetensors"
    synthesize_checkpoint(src, layers=1, hidden=64, intermediate=128, vocab=32)
    with HubServer({}) as hub:
        done = run(
            "quantize",
            src,
            dst,
            "--push-to-hub",
            "me/q",
            "--quiet",
            cache=tmp_path / "c",
            endpoint=hub.url,
        )
        assert done.returncode == 0, done.stderr
        assert hub.commits == [("me/q", {"q.safetensors": dst.read_bytes()})]
        assert hub.created == [("me/q", False)]


def test_a_refused_upload_is_one_error_and_the_output_stays(tmp_path, hub_client):
    src, dst = tmp_path / "src", tmp_path / "out"
    make_folder(src, 1)
    with HubServer({}, read_only=True) as hub:
        done = run(
            "quantize", src, dst, "--push-to-hub", "me/x", cache=tmp_path / "c", endpoint=hub.url
        )
    assert done.returncode == 2
    assert done.stderr == (
        f"ryzq: error: me/x: the upload of {dst} failed: HTTP 403 (no right to write there)\n"
    )
    assert (dst / "config.json").is_file()


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--push-to-hub", "not a repo"], "not a repo: not a Hub repository; write ORG/NAME"),
        (["--push-to-hub", "me/x", "--dry-run"], "--dry-run does not write"),
        (["--private"], "--private is for --push-to-hub"),
    ],
)
def test_push_to_hub_options_are_checked_before_any_work(tmp_path, capsys, extra, says):
    src, dst = tmp_path / "src", tmp_path / "out"
    make_folder(src, 1)
    assert main(["quantize", str(src), str(dst), *extra]) == 2
    assert says in capsys.readouterr().err
    assert not dst.exists()


@pytest.mark.parametrize("url", ["hf://a/b--c", "hf://a/b..c", "hf://a/b.", "hf://a/" + "x" * 96])
def test_a_repository_id_the_hub_refuses_is_refused(url):
    with pytest.raises(ryzq.RyzqError, match="not a Hub model"):
        parse(url)
    with pytest.raises(ryzq.RyzqError, match="not a Hub repository"):
        check_repo_id(url.removeprefix("hf://"))


def test_a_hub_that_cannot_be_reached_is_one_error(tmp_path, hub_client):
    closed = "http://127.0.0.1:9"
    done = run("quantize", f"hf://{REPO}", tmp_path / "o", cache=tmp_path / "c", endpoint=closed)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "could not be reached" in done.stderr and TOKEN not in done.stderr
    src, dst = tmp_path / "src", tmp_path / "out"
    make_folder(src, 1)
    done = run(
        "quantize",
        src,
        dst,
        "--push-to-hub",
        "me/x",
        "--quiet",
        cache=tmp_path / "c",
        endpoint=closed,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "could not be reached" in done.stderr and (dst / "config.json").is_file()


def test_a_partly_cached_model_offline_is_one_error(tmp_path, hub_client):
    folder = tmp_path / "model"
    make_folder(folder, 2)
    (folder / "model-00002-of-00002.safetensors").unlink()
    lay_out_hub_cache(tmp_path / "cache", REPO, folder, COMMIT)
    done = run("quantize", f"hf://{REPO}", tmp_path / "out", cache=tmp_path / "cache")
    assert done.returncode == 2
    assert done.stderr == (
        f"ryzq: error: hf://{REPO}: the Hub's cache holds it only in part (not "
        "model-00002-of-00002.safetensors), and HF_HUB_OFFLINE forbids fetching the rest\n"
    )


def test_shards_in_a_subfolder_are_refused_before_any_download():
    index = {"weight_map": {"a": "w/model.safetensors"}}
    listed = ["config.json", "model.safetensors.index.json", "w/model.safetensors"]
    with pytest.raises(ryzq.RyzqError, match=r"lists w/model\.safetensors, not a plain file"):
        wanted_files(listed, index)


@pytest.mark.parametrize("index", [b"{not json", b'{"weight_map": [1, 2]}'])
def test_a_broken_index_on_the_hub_is_one_error(tmp_path, hub_client, index):
    folder = tmp_path / "repo"
    make_folder(folder, 2)
    (folder / "model.safetensors.index.json").write_bytes(index)
    with HubServer({REPO: Repository(REPO, COMMIT, folder)}) as hub:
        done = run(
            "quantize", f"hf://{REPO}", tmp_path / "out", cache=tmp_path / "c", endpoint=hub.url
        )
    assert done.returncode == 2
    assert done.stderr.startswith(f"ryzq: error: hf://{REPO}: its model.safetensors.index.json ")
    assert done.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_shards_convert_while_the_next_ones_download(tmp_path, hub_client):
    """The server holds back the last shard until the first output file is recorded as
    converted (or 60 s pass): only a conversion that overlaps the downloads sees it early."""
    folder = tmp_path / "repo"
    make_folder(folder, 4)
    cache, dst, report = tmp_path / "cache", tmp_path / "out", tmp_path / "report.json"
    first = tmp_path / ".out.ryzq-parts" / "model-00001-of-00004.safetensors.done.json"
    seen: dict[str, bool] = {}

    def hold_back_the_last(name: str) -> None:
        if name == "model-00004-of-00004.safetensors":
            deadline = time.monotonic() + 60
            while not first.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            seen[name] = first.exists()
        return None

    repos = {REPO: Repository(REPO, COMMIT, folder)}
    with HubServer(repos, before_sending=hold_back_the_last) as hub:
        done = run(
            "quantize",
            f"hf://{REPO}",
            dst,
            "--report",
            report,
            "--quiet",
            cache=cache,
            endpoint=hub.url,
        )
        assert done.returncode == 0, done.stderr
    assert seen == {"model-00004-of-00004.safetensors": True}
    assert not (tmp_path / ".out.ryzq-parts").exists()
    # What a conversion of the whole snapshot gives, byte for byte, and the same report.
    snapshot = cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT
    local = tmp_path / "local"
    expected = ryzq.quantize_model(snapshot, local).to_dict()
    for path in sorted(local.iterdir()):
        if path.name != "README.md":
            assert (dst / path.name).read_bytes() == path.read_bytes(), path.name
    got = json.loads(report.read_text())
    assert got["src"] == str(snapshot) == expected["src"]
    for key in ("summary", "tensors"):
        for r in (got, expected):
            for t in r["tensors"]:
                t.pop("seconds", None)
            for k in ("seconds", "parameters_per_second", "bytes_per_second"):
                r["summary"].pop(k, None)
        assert got[key] == expected[key]
    assert got["source"]["commit"] == COMMIT


def test_a_download_that_fails_midway_leaves_nothing_but_what_a_rerun_reuses(tmp_path, hub_client):
    folder = tmp_path / "repo"
    make_folder(folder, 4)
    cache, dst = tmp_path / "cache", tmp_path / "out"
    parts = tmp_path / ".out.ryzq-parts"
    first = parts / "model-00001-of-00004.safetensors.done.json"
    repos = {REPO: Repository(REPO, COMMIT, folder)}

    def refuse_the_third(name: str) -> int | None:
        # Once the first output file is made, so that there is something to keep.
        if name != "model-00003-of-00004.safetensors":
            return None
        deadline = time.monotonic() + 60
        while not first.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return 403

    with HubServer(repos, before_sending=refuse_the_third) as hub:
        failed = run("quantize", f"hf://{REPO}", dst, "--quiet", cache=cache, endpoint=hub.url)
    assert failed.returncode != 0
    assert failed.stderr == f"ryzq: error: hf://{REPO}@{COMMIT}: the Hub answered HTTP 403\n"
    assert not dst.exists()
    # What was made is kept for the rerun, in the parts folder only, each file with its record.
    kept = sorted(p.name for p in parts.glob("*.safetensors"))
    assert "model-00001-of-00004.safetensors" in kept
    assert "model-00003-of-00004.safetensors" not in kept
    assert sorted(p.name for p in parts.iterdir()) == sorted(
        kept + [f"{name}.done.json" for name in kept]
    )
    snapshot = cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT
    cached = {p.name for p in snapshot.glob("*.safetensors")}
    with HubServer(repos) as hub:
        again = run("quantize", f"hf://{REPO}", dst, "--quiet", cache=cache, endpoint=hub.url)
        assert again.returncode == 0, again.stderr
        # The shards fetched before the failure come from the cache, and the output files
        # made from them from the parts folder.
        assert hub.fetched() == sorted(
            f"model-0000{i}-of-00004.safetensors"
            for i in range(1, 5)
            if f"model-0000{i}-of-00004.safetensors" not in cached
        )
    assert f"{len(kept)} of 4 output files were made by an earlier run" in again.stderr
    local = tmp_path / "local"
    ryzq.quantize_model(folder, local)
    for path in sorted(local.glob("*.safetensors")):
        assert (dst / path.name).read_bytes() == path.read_bytes(), path.name
