"""The Git store: one bare repository per Organization, written with pygit2 and nothing else.

A commit builds its tree from the old tree along the changed paths only (no index, no worktree),
and refs/heads/main moves by compare-and-swap, so concurrent workers and engineers' own commits
(under apps/) are never overwritten. This is the only module that imports pygit2.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import random
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol

import pygit2
from pygit2.enums import FileMode, ObjectType, Option

MAIN = "refs/heads/main"

TRAILER_CHANGE_ID = "Hexabase-Change-Id"
TRAILER_ACTOR = "Hexabase-Actor"
TRAILER_REQUEST_ID = "Hexabase-Request-Id"

ORG_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
ORG_ID_RULE = "must be 1-128 letters, digits, '-' or '_', starting with a letter or digit"

Writes = Mapping[PurePosixPath, bytes]
PathLike = PurePosixPath | str
Durability = Literal["syncfs", "fsync", "none"]

log = logging.getLogger("hexabase.gitstore")


# --------------------------------------------------------------------------- errors


class GitStoreError(Exception):
    """Base class for every error the Git store raises."""


class UnsafePathError(GitStoreError, ValueError):
    """A path that must never reach a tenant tree (absolute, '..', '.git', ...)."""


class PathConflictError(GitStoreError, ValueError):
    """A write or delete that contradicts the tree: a file where a directory is, or the reverse."""


class RepositoryNotFoundError(GitStoreError, LookupError):
    """No repository for this organization; create it first."""


class RepositoryExistsError(GitStoreError):
    """The organization already has a repository; it is never created twice."""


class ConcurrentUpdateError(GitStoreError):
    """refs/heads/main moved under us more often than we may retry, or differs from the
    head the caller required. Temporary: retrying later is safe."""


class PushError(GitStoreError):
    """The remote refused or could not be reached; the local commit stands."""


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Person:
    """A commit identity: the acting user (author) or Hexabase itself (committer)."""

    name: str
    email: str

    def __post_init__(self) -> None:
        for value in (self.name, self.email):
            if not value or any(c in value for c in "<>\n\r\0"):
                raise ValueError(f"invalid identity {value!r}: no '<', '>' or line breaks")


@dataclass(frozen=True)
class ChangeTrailer:
    """One change a commit carries, written as a group of git trailers."""

    change_id: str
    actor: str
    request_id: str

    def __post_init__(self) -> None:
        for key, value in self.lines():
            if not value or value != value.strip() or any(c in value for c in "\n\r\0"):
                raise ValueError(f"{key} {value!r}: must be one non-empty line, no edge spaces")

    def lines(self) -> tuple[tuple[str, str], ...]:
        return (
            (TRAILER_CHANGE_ID, self.change_id),
            (TRAILER_ACTOR, self.actor),
            (TRAILER_REQUEST_ID, self.request_id),
        )


@dataclass(frozen=True)
class CommitResult:
    """What a write did. `committed` is False when the tree was unchanged (then `sha` is the
    current head and nothing was written)."""

    sha: str
    committed: bool
    parent: str | None
    written: tuple[PurePosixPath, ...] = ()
    deleted: tuple[PurePosixPath, ...] = ()
    attempts: int = 1
    push_error: str | None = None


@dataclass(frozen=True)
class CommitRecord:
    """A commit of main as the audit view and the tests read it."""

    sha: str
    parents: tuple[str, ...]
    author: Person
    committer: Person
    authored_at: datetime
    committed_at: datetime
    subject: str
    message: str
    changes: tuple[ChangeTrailer, ...]


@dataclass(frozen=True)
class Plan:
    """The writes and deletes that bring the managed files at `head` to a rendered state."""

    head: str
    writes: dict[PurePosixPath, bytes]
    deletes: tuple[PurePosixPath, ...]

    @property
    def empty(self) -> bool:
        return not self.writes and not self.deletes


class TenantRepoStore(Protocol):
    """What the worker and the API need from a tenant repository store."""

    def exists(self, org_id: str) -> bool: ...

    def create(
        self,
        org_id: str,
        skeleton: Writes,
        *,
        author: Person,
        subject: str,
        changes: Sequence[ChangeTrailer] = (),
    ) -> CommitResult: ...

    def commit(
        self,
        org_id: str,
        *,
        writes: Writes,
        deletes: Iterable[PathLike] = (),
        author: Person,
        subject: str,
        changes: Sequence[ChangeTrailer] = (),
        body: str = "",
        expected_head: str | None = None,
    ) -> CommitResult: ...

    def commit_rendered(
        self,
        org_id: str,
        rendered: Writes,
        *,
        is_managed: Callable[[PurePosixPath], bool],
        author: Person,
        subject: str,
        changes: Sequence[ChangeTrailer] = (),
        body: str = "",
        scope: Sequence[PathLike] | None = None,
        may_contain_managed: Callable[[PurePosixPath], bool] | None = None,
    ) -> CommitResult: ...

    def committed_change_ids(
        self, org_id: str, change_ids: Iterable[str], *, depth: int = 100
    ) -> set[str]: ...

    def contains(self, org_id: str, revision: str, commit: str) -> bool: ...

    def head(self, org_id: str) -> str: ...

    def read_file(self, org_id: str, path: PathLike, *, rev: str | None = None) -> bytes | None: ...

    def log(self, org_id: str, *, limit: int = 50) -> list[CommitRecord]: ...

    def push(self, org_id: str) -> None: ...


# --------------------------------------------------------------------------- paths


def safe_path(path: PathLike) -> PurePosixPath:
    """Return `path` as a relative PurePosixPath, or raise UnsafePathError.

    Refused: absolute paths, empty segments, '.', '..', a '.git' segment anywhere, a first
    segment starting with '.git' (.gitmodules, .gitattributes: they change how Git and Flux read
    the repo), NUL and backslashes. A str is checked before PurePosixPath could hide '//' or '.'.
    """
    if isinstance(path, PurePosixPath):
        segments = list(path.parts)
        if not segments or path.is_absolute():
            raise UnsafePathError(f"{str(path)!r}: must be a relative file path")
    else:
        if not path or path.startswith("/"):
            raise UnsafePathError(f"{path!r}: must be a relative file path")
        segments = path.split("/")
    raw = str(path)
    for segment in segments:
        if segment in ("", ".", ".."):
            raise UnsafePathError(f"{raw!r}: empty, '.' and '..' segments are not allowed")
        if "\0" in segment or "\\" in segment:
            raise UnsafePathError(f"{raw!r}: NUL and backslash are not allowed")
        if segment.lower() == ".git":
            raise UnsafePathError(f"{raw!r}: '.git' is not allowed in a path")
    if segments[0].lower().startswith(".git"):
        raise UnsafePathError(f"{raw!r}: paths starting with '.git' are not allowed")
    return path if isinstance(path, PurePosixPath) else PurePosixPath(path)


# --------------------------------------------------------------------------- messages


def format_message(subject: str, changes: Sequence[ChangeTrailer] = (), body: str = "") -> str:
    """Subject, optional body, then one trailer group per change, in order."""
    subject = subject.strip()
    if not subject or "\n" in subject or "\r" in subject:
        raise ValueError("commit subject must be one non-empty line")
    parts = [subject]
    if body.strip():
        parts.append(body.strip())
    if changes:
        parts.append("\n".join(f"{k}: {v}" for c in changes for k, v in c.lines()))
    return "\n\n".join(parts) + "\n"


def parse_change_trailers(message: str) -> tuple[ChangeTrailer, ...]:
    """The Hexabase trailer groups of a commit message (last paragraph), in order."""
    paragraphs = [p for p in message.strip().split("\n\n") if p.strip()]
    if len(paragraphs) < 2:
        return ()
    groups: list[dict[str, str]] = []
    for line in paragraphs[-1].splitlines():
        key, sep, value = line.partition(": ")
        if not sep:
            continue
        if key == TRAILER_CHANGE_ID:
            groups.append({key: value.strip()})
        elif key in (TRAILER_ACTOR, TRAILER_REQUEST_ID) and groups:
            groups[-1][key] = value.strip()
    found = []
    for g in groups:
        try:
            found.append(
                ChangeTrailer(
                    change_id=g[TRAILER_CHANGE_ID],
                    actor=g.get(TRAILER_ACTOR, "unknown"),
                    request_id=g.get(TRAILER_REQUEST_ID, "unknown"),
                )
            )
        except ValueError:
            continue
    return tuple(found)


# --------------------------------------------------------------------------- tree building


@dataclass
class _Node:
    """Pending changes for one name in a directory: write a blob, delete it, or recurse."""

    children: dict[str, _Node] = field(default_factory=dict)
    write: bytes | None = None
    delete: bool = False


def _change_tree(writes: Writes, deletes: Iterable[PathLike]) -> _Node:
    root = _Node()
    for raw, data in writes.items():
        path = safe_path(raw)
        node = _walk_to(root, path)
        if node.write is not None or node.delete:
            raise PathConflictError(f"{path}: named twice in one commit")
        if not isinstance(data, bytes):
            raise TypeError(f"{path}: content must be bytes, not {type(data).__name__}")
        node.write = data
    for raw_delete in deletes:
        path = safe_path(raw_delete)
        node = _walk_to(root, path)
        if node.write is not None:
            raise PathConflictError(f"{path}: both written and deleted in one commit")
        node.delete = True
    return root


def _walk_to(root: _Node, path: PurePosixPath) -> _Node:
    node = root
    for part in path.parts:
        node = node.children.setdefault(part, _Node())
    return node


def _build_tree(
    repo: pygit2.Repository, old: pygit2.Tree | None, node: _Node, where: PurePosixPath
) -> pygit2.Oid | None:
    """Write the directory `old` with `node`'s changes applied; None when it ends up empty.

    Only directories on a changed path are visited; every other entry is copied by id from the
    old tree, so untouched subtrees keep their ids and the cost follows the change.
    """
    builder = repo.TreeBuilder(old) if old is not None else repo.TreeBuilder()
    for name, change in node.children.items():
        path = where / name
        entry: pygit2.Object | None = None
        if old is not None:
            try:
                entry = old[name]
            except KeyError:
                entry = None
        is_dir = entry is not None and entry.type == ObjectType.TREE
        state: tuple[pygit2.Oid, int] | None = (
            (entry.id, entry.filemode) if entry is not None else None
        )
        # Deletes first, then the subdirectory, then the write: this order lets one commit turn a
        # file into a directory (delete x, write x/y) or a directory into a file.
        if change.delete:
            if is_dir:
                raise PathConflictError(f"{path}: is a directory; a delete names a file")
            state = None
        if change.children:
            if state is not None and not is_dir:
                raise PathConflictError(f"{path}: is a file; cannot write beneath it")
            sub_old = repo[entry.id] if is_dir and entry is not None else None
            assert sub_old is None or isinstance(sub_old, pygit2.Tree)
            sub = _build_tree(repo, sub_old, change, path)
            state = (sub, FileMode.TREE) if sub is not None else None
            is_dir = sub is not None
        if change.write is not None:
            if is_dir and state is not None:
                raise PathConflictError(f"{path}: is a directory; cannot write a file there")
            state = (repo.create_blob(change.write), FileMode.BLOB)
        if state is None:
            if builder.get(name) is not None:
                builder.remove(name)
        else:
            builder.insert(name, state[0], state[1])
    if len(builder) == 0:
        return None  # empty directories are pruned: Git cannot hold them anyway
    return builder.write()


def _lookup(tree: pygit2.Tree, path: PurePosixPath) -> pygit2.Object | None:
    obj: pygit2.Object = tree
    for part in path.parts:
        if not isinstance(obj, pygit2.Tree):
            return None
        try:
            obj = obj[part]
        except KeyError:
            return None
    return obj


def _default_descend(
    is_managed: Callable[[PurePosixPath], bool],
) -> Callable[[PurePosixPath], bool]:
    # A directory can hold managed files when a file placed right inside it would be managed:
    # true for host/ and workspaces/, false for workspaces/*/projects/*/apps. Pass
    # may_contain_managed explicitly for rules that depend on depth.
    return lambda directory: is_managed(directory / "_")


def plan_rendered(
    repo: pygit2.Repository,
    head: pygit2.Commit,
    rendered: Writes,
    *,
    is_managed: Callable[[PurePosixPath], bool],
    scope: Sequence[PathLike] | None = None,
    may_contain_managed: Callable[[PurePosixPath], bool] | None = None,
) -> Plan:
    """Compare a rendered set of managed files with the tree at `head`.

    Writes: rendered files whose blob id differs (hashed in memory, nothing written). Every
    rendered path must be managed: a renderer bug that writes into apps/ is refused here.
    Deletes: managed files in the old tree, inside `scope`, that were not rendered. The walk
    enters only directories that may contain managed files, so apps/ is never read.
    `scope` (paths of directories or files) says which part of the repo `rendered` is complete
    for; by default the whole repository.
    """
    descend = may_contain_managed or _default_descend(is_managed)
    roots = [safe_path(s) for s in scope] if scope is not None else [PurePosixPath()]
    root_tree = head.tree
    whole_repo = any(not r.parts for r in roots)
    wanted: dict[PurePosixPath, bytes] = {}
    for raw, data in rendered.items():
        path = safe_path(raw)
        if not is_managed(path):
            raise UnsafePathError(f"{path}: rendered but not a managed path")
        parts = path.parts
        if not whole_repo and not any(parts[: len(r.parts)] == r.parts for r in roots):
            raise UnsafePathError(f"{path}: outside the scope {[str(r) for r in roots]}")
        wanted[path] = data

    dirs: dict[PurePosixPath, pygit2.Object | None] = {}
    writes: dict[PurePosixPath, bytes] = {}
    for path, data in wanted.items():
        parent = path.parent
        if parent not in dirs:
            dirs[parent] = _lookup(root_tree, parent) if parent.parts else root_tree
        directory = dirs[parent]
        entry: pygit2.Object | None = None
        if isinstance(directory, pygit2.Tree):
            try:
                entry = directory[path.name]
            except KeyError:
                entry = None
        if entry is None or entry.type != ObjectType.BLOB or entry.id != pygit2.hash(data):
            writes[path] = data

    rendered_names = {str(path) for path in wanted}
    deletes: list[PurePosixPath] = []
    for root in roots:
        obj = _lookup(root_tree, root) if root.parts else root_tree
        if isinstance(obj, pygit2.Tree):
            where = str(root) if root.parts else ""
            deletes.extend(
                _unrendered_managed_files(repo, obj, where, rendered_names, is_managed, descend)
            )
        elif obj is not None and is_managed(root) and root not in wanted:
            deletes.append(root)
    return Plan(head=str(head.id), writes=writes, deletes=tuple(sorted(set(deletes))))


def _unrendered_managed_files(
    repo: pygit2.Repository,
    tree: pygit2.Tree,
    where: str,
    rendered: set[str],
    is_managed: Callable[[PurePosixPath], bool],
    descend: Callable[[PurePosixPath], bool],
) -> Iterator[PurePosixPath]:
    """Managed files under `tree` that are not in `rendered` (paths as str, for speed)."""
    for entry in tree:
        name = entry.name
        assert name is not None
        path = f"{where}/{name}" if where else name
        if entry.type == ObjectType.TREE:
            if descend(PurePosixPath(path)):
                sub = repo[entry.id]
                assert isinstance(sub, pygit2.Tree)
                yield from _unrendered_managed_files(repo, sub, path, rendered, is_managed, descend)
        elif (
            entry.type == ObjectType.BLOB
            and path not in rendered
            and is_managed(PurePosixPath(path))
        ):
            yield PurePosixPath(path)


# --------------------------------------------------------------------------- the store


class GitStore:
    """Bare repositories `<root>/<org_id>.git`, each with a linear history on main.

    `push_url`, when set, is a template such as "https://git.example.com/{org_id}.git" or a
    local path: every commit is pushed there after the ref moved (failures are reported in
    CommitResult.push_error; the commit stands and `push` can be retried).
    `durability` says how a commit is made to survive a power loss before the caller records
    it: "syncfs" (default) flushes the repository's filesystem once after the objects are
    written and once after main moved (objects durable before the ref that names them, two
    flushes a commit); "fsync" has libgit2 fsync every object and ref (about 16 fsyncs a
    commit; a process-wide libgit2 setting); "none" leaves it to the kernel (tests, benches).
    A crashed writer's `refs/heads/main.lock` older than `stale_lock_seconds` is removed:
    git itself holds that lock for milliseconds, so an old one belongs to a dead process.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        committer: Person = Person("Hexabase", "hexabase@hexabase.local"),
        push_url: str | None = None,
        max_attempts: int = 8,
        durability: Durability = "syncfs",
        stale_lock_seconds: float = 60.0,
    ) -> None:
        self.root = Path(root)
        self.committer = committer
        self.push_url = push_url
        self.max_attempts = max_attempts
        self.durability = durability
        self.stale_lock_seconds = stale_lock_seconds
        # org id -> (head sha, the managed files at that head), from the last full render.
        self._last_rendered: dict[str, tuple[str, dict[PurePosixPath, bytes]]] = {}
        pygit2.option(Option.ENABLE_FSYNC_GITDIR, durability == "fsync")
        self.root.mkdir(parents=True, exist_ok=True)

    def _flush(self, repo: pygit2.Repository) -> None:
        if self.durability == "syncfs":
            syncfs(Path(repo.path))

    def _break_stale_lock(self, repo: pygit2.Repository) -> None:
        lock = Path(repo.path) / "refs" / "heads" / "main.lock"
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return
        if age > self.stale_lock_seconds:
            log.warning("removing %s, left %.0f s ago by a writer that died", lock, age)
            lock.unlink(missing_ok=True)

    # ----------------------------------------------------------------- repositories

    def path(self, org_id: str) -> Path:
        if not ORG_ID.fullmatch(org_id):
            raise ValueError(f"organization id {org_id!r} {ORG_ID_RULE}")
        return self.root / f"{org_id}.git"

    def exists(self, org_id: str) -> bool:
        return (self.path(org_id) / "HEAD").is_file()

    def _open(self, org_id: str) -> pygit2.Repository:
        path = self.path(org_id)
        if not (path / "HEAD").is_file():
            raise RepositoryNotFoundError(f"no repository for organization {org_id!r} at {path}")
        return pygit2.Repository(str(path))

    def create(
        self,
        org_id: str,
        skeleton: Writes,
        *,
        author: Person,
        subject: str,
        changes: Sequence[ChangeTrailer] = (),
    ) -> CommitResult:
        """Create the organization's repository with `skeleton` as the first commit on main.

        Built under a temporary name and renamed into place, so nobody ever opens a half-made
        repository and two creators cannot both succeed.
        """
        final = self.path(org_id)
        if final.exists():
            raise RepositoryExistsError(f"organization {org_id!r} already has {final}")
        message = format_message(subject, changes)
        nodes = _change_tree(skeleton, ())
        tmp = self.root / f".creating-{org_id}-{uuid.uuid4().hex}.git"
        try:
            repo = pygit2.init_repository(str(tmp), bare=True, initial_head="main")
            tree = _build_tree(repo, None, nodes, PurePosixPath()) or repo.TreeBuilder().write()
            sha = repo.create_commit(
                MAIN, self._signature(author), self._signature(self.committer), message, tree, []
            )
            del repo
            try:
                os.rename(tmp, final)
            except OSError as exc:
                raise RepositoryExistsError(f"organization {org_id!r} already has {final}") from exc
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        result = CommitResult(
            sha=str(sha), committed=True, parent=None, written=tuple(sorted(skeleton))
        )
        return self._after_commit(org_id, result)

    # ----------------------------------------------------------------- writes

    def commit(
        self,
        org_id: str,
        *,
        writes: Writes,
        deletes: Iterable[PathLike] = (),
        author: Person,
        subject: str,
        changes: Sequence[ChangeTrailer] = (),
        body: str = "",
        expected_head: str | None = None,
    ) -> CommitResult:
        """Write and delete files on main in one commit; no commit if the tree is unchanged.

        Deleting a missing file is a no-op. With `expected_head`, the commit lands only on that
        head (ConcurrentUpdateError otherwise); without it, a lost race re-applies the same
        writes and deletes on the new head, which keeps whatever the other writer committed.
        """
        message = format_message(subject, changes, body)
        deletes = tuple(deletes)
        nodes = _change_tree(writes, deletes)
        repo = self._open(org_id)
        for attempt in range(1, self.max_attempts + 1):
            head = self._head_commit(repo)
            if expected_head is not None and str(head.id) != expected_head:
                raise ConcurrentUpdateError(
                    f"{org_id}: main is at {head.id}, the caller expected {expected_head}"
                )
            result = self._try_commit(repo, org_id, head, nodes, author, message, attempt)
            if result is not None and not result.committed:
                return result
            if result is not None:
                written = tuple(sorted(safe_path(p) for p in writes))
                deleted = tuple(sorted(safe_path(p) for p in deletes))
                return self._after_commit(org_id, replace(result, written=written, deleted=deleted))
            if expected_head is not None:
                raise ConcurrentUpdateError(f"{org_id}: main moved away from {expected_head}")
            _backoff(attempt)
        raise ConcurrentUpdateError(
            f"{org_id}: main kept moving; gave up after {self.max_attempts} attempts"
        )

    def commit_rendered(
        self,
        org_id: str,
        rendered: Writes,
        *,
        is_managed: Callable[[PurePosixPath], bool],
        author: Person,
        subject: str,
        changes: Sequence[ChangeTrailer] = (),
        body: str = "",
        scope: Sequence[PathLike] | None = None,
        may_contain_managed: Callable[[PurePosixPath], bool] | None = None,
    ) -> CommitResult:
        """Make the managed files on main equal `rendered`; what the worker calls.

        Plans against the current head (see plan_rendered), commits only what differs, and on a
        lost race re-plans against the new head, so a commit made meanwhile (an engineer's
        change under apps/, another worker) is kept. No commit when nothing differs.
        """
        message = format_message(subject, changes, body)
        repo = self._open(org_id)
        for attempt in range(1, self.max_attempts + 1):
            head = self._head_commit(repo)
            plan = (
                self._plan_from_last(org_id, head, rendered, is_managed) if scope is None else None
            )
            if plan is None:
                plan = plan_rendered(
                    repo,
                    head,
                    rendered,
                    is_managed=is_managed,
                    scope=scope,
                    may_contain_managed=may_contain_managed,
                )
            if plan.empty:
                self._remember(org_id, plan.head, rendered, scope)
                return CommitResult(sha=plan.head, committed=False, parent=None, attempts=attempt)
            nodes = _change_tree(plan.writes, plan.deletes)
            result = self._try_commit(repo, org_id, head, nodes, author, message, attempt)
            if result is not None and not result.committed:
                return result
            if result is not None:
                self._remember(org_id, result.sha, rendered, scope)
                return self._after_commit(
                    org_id,
                    replace(result, written=tuple(sorted(plan.writes)), deleted=plan.deletes),
                )
            _backoff(attempt)
        raise ConcurrentUpdateError(
            f"{org_id}: main kept moving; gave up after {self.max_attempts} attempts"
        )

    def _remember(
        self, org_id: str, head: str, rendered: Writes, scope: Sequence[PathLike] | None
    ) -> None:
        """After a full (unscoped) commit_rendered, main's managed files at `head` are exactly
        `rendered`: remember that, so the next plan on the same head compares two maps in
        memory instead of hashing every file against the tree."""
        if scope is None:
            self._last_rendered[org_id] = (head, dict(rendered))

    def _plan_from_last(
        self,
        org_id: str,
        head: pygit2.Commit,
        rendered: Writes,
        is_managed: Callable[[PurePosixPath], bool],
    ) -> Plan | None:
        last = self._last_rendered.get(org_id)
        if last is None or last[0] != str(head.id):
            return None  # main moved (an engineer, another worker): plan against the tree
        before = last[1]
        writes: dict[PurePosixPath, bytes] = {}
        for path, data in rendered.items():
            old = before.get(path)
            if old is None:
                safe = safe_path(path)
                if not is_managed(safe):
                    raise UnsafePathError(f"{path}: rendered but not a managed path")
                writes[safe] = data
            elif old is not data and old != data:
                writes[path] = data
        deletes = tuple(sorted(p for p in before if p not in rendered))
        return Plan(head=str(head.id), writes=writes, deletes=deletes)

    def _try_commit(
        self,
        repo: pygit2.Repository,
        org_id: str,
        head: pygit2.Commit,
        nodes: _Node,
        author: Person,
        message: str,
        attempt: int,
    ) -> CommitResult | None:
        """One attempt: build the tree on `head`, write the commit, CAS main. None if lost."""
        tree = _build_tree(repo, head.tree, nodes, PurePosixPath()) or repo.TreeBuilder().write()
        if tree == head.tree_id:
            return CommitResult(sha=str(head.id), committed=False, parent=None, attempts=attempt)
        sha = repo.create_commit(
            None,
            self._signature(author),
            self._signature(self.committer),
            message,
            tree,
            [head.id],
        )
        self._flush(repo)  # the objects are durable before a ref can name them
        self._before_ref_update(org_id, str(head.id))
        self._break_stale_lock(repo)
        if not _compare_and_swap(repo, head.id, sha, f"commit: {message.splitlines()[0]}"):
            return None
        self._flush(repo)  # and the ref before the caller records the commit
        return CommitResult(sha=str(sha), committed=True, parent=str(head.id), attempts=attempt)

    def _before_ref_update(self, org_id: str, planned_head: str) -> None:
        """Seam between writing the commit object and moving main (tests race here)."""

    def _after_commit(self, org_id: str, result: CommitResult) -> CommitResult:
        if self.push_url is None or not result.committed:
            return result
        try:
            self.push(org_id)
        except PushError as exc:
            return replace(result, push_error=str(exc))
        return result

    def push(self, org_id: str) -> None:
        """Push main to the configured remote (fast-forward only)."""
        if self.push_url is None:
            raise PushError("no push_url configured")
        repo = self._open(org_id)
        url = self.push_url.format(org_id=org_id)
        callbacks = _PushCallbacks()
        try:
            repo.remotes.create_anonymous(url).push([f"{MAIN}:{MAIN}"], callbacks=callbacks)
        except pygit2.GitError as exc:
            raise PushError(f"push of {org_id} to {url} failed: {exc}") from exc
        if callbacks.rejected:
            raise PushError(f"push of {org_id} to {url} rejected: {callbacks.rejected}")

    # ----------------------------------------------------------------- reads

    def contains(self, org_id: str, revision: str, commit: str) -> bool:
        """Whether `revision` carries `commit` (is it or descends from it). False when either is
        not in the repository (Flux reports a revision this store never wrote)."""
        if revision == commit:
            return True
        repo = self._open(org_id)
        try:
            return bool(repo.descendant_of(pygit2.Oid(hex=revision), pygit2.Oid(hex=commit)))
        except (ValueError, KeyError, pygit2.GitError):
            return False

    def head(self, org_id: str) -> str:
        return str(self._head_commit(self._open(org_id)).id)

    def read_file(self, org_id: str, path: PathLike, *, rev: str | None = None) -> bytes | None:
        """The bytes of a file at main (or at commit `rev`); None if there is no such file."""
        repo = self._open(org_id)
        commit = self._head_commit(repo) if rev is None else repo.revparse_single(rev)
        assert isinstance(commit, pygit2.Commit)
        obj = _lookup(commit.tree, safe_path(path))
        return obj.data if isinstance(obj, pygit2.Blob) else None

    def log(self, org_id: str, *, limit: int = 50) -> list[CommitRecord]:
        """The last `limit` commits of main, newest first (first-parent history)."""
        repo = self._open(org_id)
        return [_record(c) for c in _first_parent(self._head_commit(repo), limit)]

    def committed_change_ids(
        self, org_id: str, change_ids: Iterable[str], *, depth: int = 100
    ) -> set[str]:
        """Which of `change_ids` appear in the trailers of the last `depth` commits of main.

        The worker asks this after a crash between the Git commit and the database update, so
        a change already committed is marked committed instead of being committed twice.
        """
        wanted = set(change_ids)
        found: set[str] = set()
        repo = self._open(org_id)
        for commit in _first_parent(self._head_commit(repo), depth):
            for change in parse_change_trailers(commit.message):
                if change.change_id in wanted:
                    found.add(change.change_id)
            if found == wanted:
                break
        return found

    # ----------------------------------------------------------------- helpers

    @staticmethod
    def _signature(person: Person) -> pygit2.Signature:
        return pygit2.Signature(person.name, person.email)

    @staticmethod
    def _head_commit(repo: pygit2.Repository) -> pygit2.Commit:
        ref = repo.references.get(MAIN)
        if ref is None:
            raise RepositoryNotFoundError(f"{repo.path}: has no {MAIN}")
        commit = repo[ref.target]
        assert isinstance(commit, pygit2.Commit)
        return commit


def syncfs(path: Path) -> None:
    """Flush the filesystem holding `path` (Linux syncfs(2)); os.sync() elsewhere."""
    libc = _libc()
    if libc is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


@functools.cache
def _libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    return libc if hasattr(libc, "syncfs") else None


def _compare_and_swap(repo: pygit2.Repository, old: pygit2.Oid, new: pygit2.Oid, msg: str) -> bool:
    """Move main from `old` to `new` only if it still points at `old`.

    The transaction takes refs/heads/main.lock (O_EXCL, the lock git itself uses), reads the
    ref under the lock, and renames the lock over the ref on commit: atomic across processes and
    against the git CLI. A held lock or a moved ref is a lost race (False).
    """
    try:
        with repo.transaction() as txn:
            txn.lock_ref(MAIN)
            current = repo.references.get(MAIN)
            if current is None or current.target != old:
                raise _LostRaceError
            txn.set_target(MAIN, new, message=msg)
    except _LostRaceError:
        return False
    except pygit2.GitError as exc:
        if "lock" in str(exc):
            return False
        raise
    return True


class _LostRaceError(Exception):
    pass


def _backoff(attempt: int) -> None:
    # Jitter so that two workers that lost to each other do not collide again in lockstep.
    time.sleep(random.uniform(0, 0.005 * 2**attempt))


class _PushCallbacks(pygit2.RemoteCallbacks):
    def __init__(self) -> None:
        super().__init__()
        self.rejected: dict[str, str] = {}

    def push_update_reference(self, refname: str, message: str | None) -> None:
        if message is not None:
            self.rejected[refname] = message


def _first_parent(head: pygit2.Commit, limit: int) -> Iterator[pygit2.Commit]:
    commit: pygit2.Commit | None = head
    for _ in range(limit):
        if commit is None:
            return
        yield commit
        commit = commit.parents[0] if commit.parents else None


def _record(commit: pygit2.Commit) -> CommitRecord:
    return CommitRecord(
        sha=str(commit.id),
        parents=tuple(str(p) for p in commit.parent_ids),
        author=Person(commit.author.name, commit.author.email),
        committer=Person(commit.committer.name, commit.committer.email),
        authored_at=_when(commit.author),
        committed_at=_when(commit.committer),
        subject=commit.message.splitlines()[0] if commit.message else "",
        message=commit.message,
        changes=parse_change_trailers(commit.message),
    )


def _when(signature: pygit2.Signature) -> datetime:
    return datetime.fromtimestamp(signature.time, tz=timezone(timedelta(minutes=signature.offset)))
