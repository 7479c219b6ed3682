"""Benchmark: the cost of one small change through the Git store, as the repository grows.

`python -m bench.writer` builds tenant repositories of about 1k, 10k and 100k files (with git
fast-import; not measured), then commits a new project (8 new files plus the workspace's
kustomization.yaml) through the store and, side by side, through the git CLI on a clone with a
worktree (`git add` + `git commit`). One JSON object per size on stdout, then a summary line;
progress goes to stderr. Targets: store_ms at 100k <= 2x store_ms at 1k, and git CLI / store
>= 10 at 100k.

store_ms is the store as production runs it (durability "syncfs": the objects, then the ref,
are flushed to disk before the database records the commit); git_cli_ms is git with its
defaults, which fsync neither loose objects nor refs, so the headline speedup is the
conservative one. store_nofsync_ms and git_cli_fsync_ms give the like-for-like pairs.
store_rendered_full_ms is commit_rendered with the whole managed map: it grows with the
repository by design (every file is hashed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from reconciler.gitstore import ChangeTrailer, GitStore, Person
from reconciler.render import is_managed  # the renderer's real predicate

T = TypeVar("T")

ORG_PREFIX = "bench"
ALICE = Person("Alice Example", "alice@example.com")
PROJECT_FILES = (
    "namespace.yaml",
    "resourcequota.yaml",
    "limitrange.yaml",
    "rolebindings.yaml",
    "roles/developer.yaml",
    "roles/viewer.yaml",
    "cronjobs/backup.yaml",
    "functions/hello.yaml",
)
HOST_WORKSPACE_FILES = (
    "namespace.yaml",
    "vcluster.yaml",
    "sync.yaml",
    "quota.yaml",
    "policies.yaml",
)
WORKSPACE_FILES = ("rbac/clusterroles.yaml", "rbac/clusterrolebindings.yaml")


def log(message: str) -> None:
    print(f"[bench.writer] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- repository layout


def manifest(kind: str, name: str, namespace: str, lines: int = 8) -> bytes:
    """A plausible managed manifest, unique per path (so every file is its own blob)."""
    body = [
        "# Managed by Hexabase: change it through the Hexabase API or UI.",
        "apiVersion: v1",
        f"kind: {kind}",
        "metadata:",
        f"  name: {name}",
        f"  namespace: {namespace}",
        "  labels:",
        "    app.kubernetes.io/managed-by: hexabase",
        "spec:",
    ]
    body += [f"  field{i}: value-{name}-{i}" for i in range(lines)]
    return ("\n".join(body) + "\n").encode()


def shape(target_files: int) -> tuple[int, int]:
    """Workspaces x projects per workspace, so that no directory holds more than ~100 entries."""
    workspaces = max(1, round(math.sqrt(target_files / 10)))
    return workspaces, workspaces


def workspace_kustomization(projects: list[str]) -> bytes:
    lines = ["# Managed by Hexabase", "resources:", "  - rbac"]
    lines += [f"  - projects/{p}" for p in sorted(projects)]
    return ("\n".join(lines) + "\n").encode()


def project_files(ws: str, project: str) -> dict[str, bytes]:
    base = f"workspaces/{ws}/projects/{project}"
    files = {
        f"{base}/{name}": manifest(name.split("/")[-1].removesuffix(".yaml"), project, project)
        for name in PROJECT_FILES
    }
    return files


def repository_files(target_files: int) -> Iterator[tuple[str, bytes]]:
    workspaces, projects = shape(target_files)
    yield "README.md", b"# Tenant repository (benchmark)\n"
    yield "hexabase.yaml", b"layout: 1\n"
    yield (
        "host/kustomization.yaml",
        b"resources:\n"
        + b"".join(f"  - workspaces/ws{w:03d}\n".encode() for w in range(workspaces)),
    )
    for w in range(workspaces):
        ws = f"ws{w:03d}"
        for name in HOST_WORKSPACE_FILES:
            yield f"host/workspaces/{ws}/{name}", manifest("HostObject", ws, f"hb-{ws}")
        for name in WORKSPACE_FILES:
            yield f"workspaces/{ws}/{name}", manifest("RBAC", ws, "default")
        names = [f"p{p:03d}" for p in range(projects)]
        yield f"workspaces/{ws}/kustomization.yaml", workspace_kustomization(names)
        for project in names:
            yield from project_files(ws, project).items()
            base = f"workspaces/{ws}/projects/{project}/apps"
            yield f"{base}/README.md", b"Engineer-owned manifests.\n"
            yield f"{base}/deployment.yaml", manifest("Deployment", project, project, 12)


def git_env(home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": ALICE.name,
        "GIT_AUTHOR_EMAIL": ALICE.email,
        "GIT_COMMITTER_NAME": "Hexabase",
        "GIT_COMMITTER_EMAIL": "hexabase@hexabase.local",
    }


def build_repository(bare: Path, target_files: int, home: Path) -> int:
    """Create `bare` with one commit holding the layout, via git fast-import. Returns file count."""
    env = git_env(home)
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], env=env, check=True)
    proc = subprocess.Popen(
        ["git", "fast-import", "--quiet"], cwd=bare, env=env, stdin=subprocess.PIPE
    )
    assert proc.stdin is not None
    count = 0
    chunks: list[bytes] = []
    for mark, (_path, data) in enumerate(repository_files(target_files), start=1):
        chunks.append(b"blob\nmark :%d\ndata %d\n%s\n" % (mark, len(data), data))
        count = mark
    proc.stdin.write(b"".join(chunks))
    message = b"Create benchmark organization"
    head = [
        b"commit refs/heads/main\n",
        b"committer Hexabase <hexabase@hexabase.local> 1700000000 +0000\n",
        b"data %d\n%s\n" % (len(message), message),
    ]
    files = [
        b"M 100644 :%d %s\n" % (mark, path.encode())
        for mark, (path, _) in enumerate(repository_files(target_files), start=1)
    ]
    proc.stdin.write(b"".join(head + files) + b"\n")
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError("git fast-import failed")
    return count


# --------------------------------------------------------------------------- the change


def new_project_change(ws: str, project: str, existing: list[str]) -> dict[PurePosixPath, bytes]:
    """A new project: its 8 files, and the workspace kustomization that now lists it."""
    writes = {PurePosixPath(k): v for k, v in project_files(ws, project).items()}
    writes[PurePosixPath(f"workspaces/{ws}/kustomization.yaml")] = workspace_kustomization(
        [*existing, project]
    )
    return writes


def timed(action: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[float, T]:
    """Milliseconds spent in action(*args, **kwargs), and its result."""
    start = time.perf_counter()
    result = action(*args, **kwargs)
    return (time.perf_counter() - start) * 1000, result


def measure_size(
    workdir: Path, target_files: int, repeats: int, full_repeats: int
) -> dict[str, object]:
    org = f"{ORG_PREFIX}{target_files}"
    root = workdir / "repos"
    root.mkdir(exist_ok=True)
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    env = git_env(home)
    bare = root / f"{org}.git"
    started = time.perf_counter()
    files = build_repository(bare, target_files, home)
    log(
        f"{files} files: repository built in {time.perf_counter() - started:.1f}s; cloning worktree"
    )
    worktree = workdir / f"wt-{target_files}"
    started = time.perf_counter()
    subprocess.run(["git", "clone", "-q", str(bare), str(worktree)], env=env, check=True)
    log(f"{files} files: worktree checked out in {time.perf_counter() - started:.1f}s")

    workspaces, projects = shape(target_files)
    ws = f"ws{workspaces // 2:03d}"
    existing = [f"p{p:03d}" for p in range(projects)]

    # The store as production runs it (durability "syncfs") and without any flush.
    def store_runs(fsync: bool, tag: str) -> list[float]:
        store = GitStore(root, durability="syncfs" if fsync else "none")
        times = []
        for r in range(repeats + 1):  # the first run warms caches and is dropped
            project = f"{tag}{r:02d}"
            writes = new_project_change(ws, project, existing)
            existing.append(project)
            change = ChangeTrailer(f"chg-{tag}-{r}", ALICE.email, f"req-{tag}-{r}")
            ms, result = timed(
                store.commit,
                org,
                writes=writes,
                author=ALICE,
                subject="Create project",
                changes=[change],
            )
            assert result.committed and len(result.written) == 9, result
            times.append(ms)
        return times[1:]

    store_nofsync = store_runs(False, "nofsync")
    store_fsync = store_runs(True, "store")
    log(f"{files} files: store median {statistics.median(store_fsync):.2f} ms (fsync)")

    # commit_rendered scoped to the new project and its workspace kustomization.
    store = GitStore(root, durability="syncfs")

    scoped = []
    for r in range(repeats + 1):
        project = f"scoped{r:02d}"
        writes = new_project_change(ws, project, existing)
        existing.append(project)
        scope = [f"workspaces/{ws}/projects/{project}", f"workspaces/{ws}/kustomization.yaml"]
        ms, result = timed(
            store.commit_rendered,
            org,
            writes,
            is_managed=is_managed,
            author=ALICE,
            subject="Create project",
            scope=scope,
        )
        assert result.committed and len(result.written) == 9 and not result.deleted, result
        scoped.append(ms)
    scoped = scoped[1:]

    # commit_rendered with the full managed map: what a worker pays when it renders everything.
    managed = {
        PurePosixPath(k): v
        for k, v in repository_files(target_files)
        if is_managed(PurePosixPath(k))
    }
    full = []
    for r in range(full_repeats):
        project = f"full{r:02d}"
        rendered = dict(managed)
        for p in existing:
            if p.startswith(("nofsync", "store", "scoped", "full")):
                rendered |= {PurePosixPath(k): v for k, v in project_files(ws, p).items()}
        rendered |= new_project_change(ws, project, existing)
        existing.append(project)
        ms, result = timed(
            store.commit_rendered,
            org,
            rendered,
            is_managed=is_managed,
            author=ALICE,
            subject="Create project",
        )
        # an honest full render: exactly the new project's 8 files and the kustomization
        assert result.committed and len(result.written) == 9 and not result.deleted, result
        full.append(ms)
    log(f"{files} files: full-render commit median {statistics.median(full):.1f} ms")

    # The git CLI on a worktree of the same repository: write files (not timed), add + commit.
    cli_existing = [f"p{p:03d}" for p in range(projects)]

    def cli_runs(tag: str, config: list[str]) -> list[float]:
        times = []
        for r in range(repeats + 1):
            project = f"{tag}{r:02d}"
            writes = new_project_change(ws, project, cli_existing)
            cli_existing.append(project)
            for path, data in writes.items():
                target = worktree / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            paths = [str(p) for p in writes]

            def cli_commit(paths: list[str] = paths, r: int = r) -> None:
                git = ["git", *config]
                subprocess.run([*git, "add", "--", *paths], cwd=worktree, env=env, check=True)
                message = f"Create project\n\nHexabase-Change-Id: {tag}-{r}"
                subprocess.run(
                    [*git, "commit", "-q", "-m", message], cwd=worktree, env=env, check=True
                )

            times.append(timed(cli_commit)[0])
        return times[1:]

    # git's defaults fsync neither loose objects nor refs; core.fsync=committed does both,
    # which is what the store does with fsync on.
    cli = cli_runs("cli", [])
    cli_fsync = cli_runs("clifsync", ["-c", "core.fsync=committed", "-c", "core.fsyncMethod=fsync"])
    log(f"{files} files: git CLI median {statistics.median(cli):.1f} ms")

    store_ms = statistics.median(store_fsync)
    git_cli_ms = statistics.median(cli)
    return {
        "files": files,
        "workspaces": workspaces,
        "projects_per_workspace": projects,
        "repeats": repeats,
        "store_ms": round(store_ms, 3),
        "store_nofsync_ms": round(statistics.median(store_nofsync), 3),
        "store_rendered_scoped_ms": round(statistics.median(scoped), 3),
        "store_rendered_full_ms": round(statistics.median(full), 1),
        "git_cli_ms": round(git_cli_ms, 3),
        "git_cli_fsync_ms": round(statistics.median(cli_fsync), 3),
        "speedup_vs_git_cli": round(git_cli_ms / store_ms, 1),
        "speedup_nofsync_vs_git_cli": round(git_cli_ms / statistics.median(store_nofsync), 1),
        "speedup_vs_git_cli_fsync": round(statistics.median(cli_fsync) / store_ms, 1),
        "store_ms_all": [round(t, 3) for t in store_fsync],
        "git_cli_ms_all": [round(t, 1) for t in cli],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.writer", description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,100000", help="target file counts")
    parser.add_argument("--repeats", type=int, default=9, help="timed changes per size")
    parser.add_argument("--full-repeats", type=int, default=3, help="full-render commits per size")
    parser.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]

    with tempfile.TemporaryDirectory(prefix="hexabase-bench-", dir=args.dir) as tmp:
        results = []
        for size in sizes:
            log(f"size ~{size}: building")
            row = measure_size(Path(tmp), size, args.repeats, args.full_repeats)
            print(json.dumps(row), flush=True)
            results.append(row)

    first, last = results[0], results[-1]
    growth = float(last["store_ms"]) / float(first["store_ms"])  # type: ignore[arg-type]
    speedup = float(last["speedup_vs_git_cli"])  # type: ignore[arg-type]
    summary = {
        "summary": (
            f"one new project (9 paths) through the store (durable: syncfs): "
            f"{first['store_ms']} ms at {first['files']} files, "
            f"{last['store_ms']} ms at {last['files']} files "
            f"({last['store_nofsync_ms']} ms without fsync); git CLI add+commit "
            f"{last['git_cli_ms']} ms ({last['git_cli_fsync_ms']} ms with core.fsync=committed)"
            f" at {last['files']} files"
        ),
        "growth_100k_vs_1k": round(growth, 2),
        "speedup_vs_git_cli_100k": speedup,
        "speedup_nofsync_vs_git_cli_100k": last["speedup_nofsync_vs_git_cli"],
        "speedup_vs_git_cli_fsync_100k": last["speedup_vs_git_cli_fsync"],
        "targets_met": growth <= 2.0 and speedup >= 10,
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
