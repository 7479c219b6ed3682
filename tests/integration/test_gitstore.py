"""The Git store on real bare repositories in temporary directories, judged by the git CLI.

Covers: repository creation; trees rebuilt from the old tree along changed paths only (untouched
subtree ids kept, exactly the expected new objects written); no empty commits; author,
committer and trailers (parsed by `git interpret-trailers`); the crash-recovery lookup of change
ids; deletes that prune empty directories; file/directory swaps; path safety; commit_rendered
(blob-id diff, deletes of unrendered managed files, apps/ never read, scope); compare-and-swap
on main (held lock, expected head, an engineer's commit between plan and ref update, two
processes racing); push to a local bare remote.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import pygit2
import pytest

from reconciler.gitstore import (
    ChangeTrailer,
    CommitResult,
    ConcurrentUpdateError,
    GitStore,
    PathConflictError,
    Person,
    RepositoryExistsError,
    RepositoryNotFoundError,
    UnsafePathError,
    format_message,
    parse_change_trailers,
    safe_path,
)
from reconciler.render import is_managed as renderer_is_managed
from reconciler.render import render, skeleton_files
from tests import factories

pytestmark = pytest.mark.integration

ALICE = Person("Alice Example", "alice@example.com")
BOB = Person("Bob Example", "bob@example.com")
HEXABASE = Person("Hexabase Test", "bot@hexabase.test")
ORG = "acme"

SKELETON: dict[PurePosixPath, bytes] = {
    PurePosixPath("README.md"): b"# tenant repo\n",
    PurePosixPath("hexabase.yaml"): b"org: acme\nlayout: 1\n",
    PurePosixPath("host/kustomization.yaml"): b"resources: []\n",
}


# --------------------------------------------------------------------------- helpers


def is_managed(path: PurePosixPath) -> bool:
    """The store tests' own rule, fixed here so that they do not move with the renderer's:
    under host/ and workspaces/, except workspaces/*/projects/*/apps/**."""
    parts = path.parts
    if len(parts) < 2 or parts[0] not in ("host", "workspaces"):
        return False
    return not (len(parts) >= 5 and parts[2] == "projects" and parts[4] == "apps")


def change(n: int | str, actor: str = "alice@example.com") -> ChangeTrailer:
    return ChangeTrailer(change_id=f"chg-{n}", actor=actor, request_id=f"req-{n}")


def p(path: str) -> PurePosixPath:
    return PurePosixPath(path)


def git(*args: str, cwd: Path) -> str:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(cwd),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Eve Engineer",
        "GIT_AUTHOR_EMAIL": "eve@example.com",
        "GIT_COMMITTER_NAME": "Eve Engineer",
        "GIT_COMMITTER_EMAIL": "eve@example.com",
    }
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def engineer_commit(bare: Path, work: Path, path: str, content: str) -> str:
    """Commit one file to `bare`'s main through a clone and `git push`, as an engineer would."""
    if work.exists():
        git("pull", "-q", "--ff-only", "origin", "main", cwd=work)
    else:
        git("clone", "-q", str(bare), str(work), cwd=bare.parent)
    target = work / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content)
    git("add", path, cwd=work)
    git("commit", "-q", "-m", f"engineer: {path}", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    return git("rev-parse", "HEAD", cwd=work).strip()


def loose_objects(bare: Path) -> set[str]:
    return {
        d.name + f.name
        for d in (bare / "objects").iterdir()
        if len(d.name) == 2 and d.is_dir()
        for f in d.iterdir()
    }


def tree_id(bare: Path, rev: str, path: str) -> str:
    return git("rev-parse", f"{rev}:{path}", cwd=bare).strip()


def files_at(bare: Path, rev: str = "main") -> set[str]:
    return set(git("ls-tree", "-r", "--name-only", rev, cwd=bare).split())


def fsck(bare: Path) -> None:
    git("fsck", "--strict", "--no-dangling", cwd=bare)


def project_files(ws: str, proj: str, tag: str = "v1") -> dict[PurePosixPath, bytes]:
    base = f"workspaces/{ws}/projects/{proj}"
    return {
        p(f"{base}/namespace.yaml"): f"name: {proj} # {tag}\n".encode(),
        p(f"{base}/resourcequota.yaml"): f"quota: {proj}\n".encode(),
        p(f"{base}/roles/dev.yaml"): f"role: dev-{proj}\n".encode(),
    }


@pytest.fixture
def store(tmp_path: Path) -> GitStore:
    return GitStore(tmp_path / "repos", committer=HEXABASE)


@pytest.fixture
def repo(store: GitStore) -> Path:
    store.create(ORG, SKELETON, author=ALICE, subject="Create organization acme")
    return store.path(ORG)


def commit(store: GitStore, writes: dict[PurePosixPath, bytes], **kw: Any) -> CommitResult:
    return store.commit(ORG, writes=writes, author=ALICE, subject="test", **kw)


# --------------------------------------------------------------------------- creation


def test_create_makes_bare_repo_with_skeleton_as_first_commit_on_main(
    store: GitStore, repo: Path
) -> None:
    assert repo == store.root / "acme.git"
    assert git("rev-parse", "--is-bare-repository", cwd=repo).strip() == "true"
    assert git("symbolic-ref", "HEAD", cwd=repo).strip() == "refs/heads/main"
    assert files_at(repo) == {"README.md", "hexabase.yaml", "host/kustomization.yaml"}
    assert git("rev-list", "--count", "main", cwd=repo).strip() == "1"
    assert store.read_file(ORG, "hexabase.yaml") == b"org: acme\nlayout: 1\n"
    assert [r for r in store.root.iterdir()] == [repo]  # no temporary directory left behind
    fsck(repo)


def test_create_twice_is_refused_and_keeps_the_first(store: GitStore, repo: Path) -> None:
    head = store.head(ORG)
    with pytest.raises(RepositoryExistsError):
        store.create(ORG, {p("x"): b"x"}, author=BOB, subject="again")
    assert store.head(ORG) == head


def test_missing_repository_and_bad_org_id_are_refused(store: GitStore) -> None:
    with pytest.raises(RepositoryNotFoundError):
        store.head("nobody")
    with pytest.raises(ValueError, match="organization id"):
        store.path("../etc")


# --------------------------------------------------------------------------- tree building


def test_commit_keeps_untouched_subtree_ids(store: GitStore, repo: Path) -> None:
    commit(store, project_files("ws1", "a") | project_files("ws2", "b"))
    before = store.head(ORG)
    result = commit(store, {p("workspaces/ws1/projects/a/roles/dev.yaml"): b"role: changed\n"})
    assert result.committed and result.parent == before
    for untouched in ("workspaces/ws2", "host", "workspaces/ws1/projects/a/namespace.yaml"):
        assert tree_id(repo, before, untouched) == tree_id(repo, "main", untouched)
    for touched in ("workspaces", "workspaces/ws1", "workspaces/ws1/projects/a/roles"):
        assert tree_id(repo, before, touched) != tree_id(repo, "main", touched)
    fsck(repo)


def test_commit_writes_only_the_objects_on_the_changed_path(store: GitStore, repo: Path) -> None:
    for i in range(30):
        commit(store, project_files(f"ws{i % 3}", f"p{i}"))
    before = loose_objects(repo)
    commit(store, {p("workspaces/ws1/projects/new/roles/dev.yaml"): b"role: new\n"})
    # 1 blob + trees: root, workspaces, ws1, projects, new, roles + 1 commit = 8
    assert len(loose_objects(repo) - before) == 8


def test_unchanged_content_makes_no_commit(store: GitStore, repo: Path) -> None:
    head = store.head(ORG)
    result = commit(store, {p("host/kustomization.yaml"): b"resources: []\n"})
    assert result == CommitResult(sha=head, committed=False, parent=None)
    assert store.head(ORG) == head
    assert not commit(store, {}, deletes=[p("host/not-there.yaml")]).committed


def test_delete_prunes_directories_left_empty(store: GitStore, repo: Path) -> None:
    commit(store, project_files("ws1", "a") | {p("workspaces/ws1/kustomization.yaml"): b"k\n"})
    result = commit(store, {}, deletes=list(project_files("ws1", "a")))
    assert result.committed
    assert files_at(repo) == {
        "README.md",
        "hexabase.yaml",
        "host/kustomization.yaml",
        "workspaces/ws1/kustomization.yaml",
    }
    assert "projects" not in git("ls-tree", "main:workspaces/ws1", cwd=repo)
    commit(store, {}, deletes=[p("workspaces/ws1/kustomization.yaml")])
    assert "workspaces" not in git("ls-tree", "main", cwd=repo)
    fsck(repo)


def test_delete_of_a_directory_is_refused(store: GitStore, repo: Path) -> None:
    with pytest.raises(PathConflictError, match="is a directory"):
        commit(store, {}, deletes=[p("host")])


def test_file_and_directory_can_swap_in_one_commit(store: GitStore, repo: Path) -> None:
    commit(store, {p("host/policies.yaml"): b"p\n"})
    commit(store, {p("host/policies.yaml/a.yaml"): b"a\n"}, deletes=[p("host/policies.yaml")])
    assert store.read_file(ORG, "host/policies.yaml/a.yaml") == b"a\n"
    commit(store, {p("host/policies.yaml"): b"back\n"}, deletes=[p("host/policies.yaml/a.yaml")])
    assert store.read_file(ORG, "host/policies.yaml") == b"back\n"
    fsck(repo)


def test_writing_beneath_a_file_or_over_a_directory_is_refused(store: GitStore, repo: Path) -> None:
    head = store.head(ORG)
    with pytest.raises(PathConflictError, match="is a file"):
        commit(store, {p("README.md/x"): b"x"})
    with pytest.raises(PathConflictError, match="is a directory"):
        commit(store, {p("host"): b"x"})
    with pytest.raises(PathConflictError):
        commit(store, {p("a"): b"x", p("a/b"): b"y"})
    with pytest.raises(PathConflictError):
        commit(store, {p("a"): b"x"}, deletes=["a"])
    assert store.head(ORG) == head


@pytest.mark.parametrize(
    "bad",
    [
        "/etc/passwd",
        "../outside",
        "host/../../x",
        "host/./x",
        "host//x",
        "host/",
        "",
        ".",
        ".git/config",
        "host/.git/config",
        "host/.GIT/x",
        ".gitmodules",
        ".gitattributes",
        "host/x\0y",
        "host\\x",
    ],
)
def test_unsafe_paths_are_refused(store: GitStore, repo: Path, bad: str) -> None:
    head = store.head(ORG)
    with pytest.raises(UnsafePathError):
        store.commit(ORG, writes={bad: b"x"}, author=ALICE, subject="bad")  # type: ignore[dict-item]
    with pytest.raises(UnsafePathError):
        store.commit(ORG, writes={}, deletes=[bad], author=ALICE, subject="bad")
    assert store.head(ORG) == head


def test_safe_path_accepts_ordinary_paths_and_refuses_absolute_pure_paths() -> None:
    assert safe_path("workspaces/a/.hidden.yaml") == p("workspaces/a/.hidden.yaml")
    assert safe_path(p("host/x.yaml")) == p("host/x.yaml")
    with pytest.raises(UnsafePathError):
        safe_path(PurePosixPath("/host/x"))
    with pytest.raises(UnsafePathError):
        safe_path(PurePosixPath("host/../x"))


# --------------------------------------------------------------------------- identity and trailers


def test_author_committer_and_trailers_are_exact(store: GitStore, repo: Path) -> None:
    changes = [change(1), change(2, actor="bob@example.com")]
    result = store.commit(
        ORG,
        writes={p("host/a.yaml"): b"a\n"},
        author=BOB,
        subject="Add workspace a",
        body="Two changes in one commit.",
        changes=changes,
    )
    fmt = "%an|%ae|%cn|%ce"
    assert git("log", "-1", f"--format={fmt}", "main", cwd=repo).strip() == (
        "Bob Example|bob@example.com|Hexabase Test|bot@hexabase.test"
    )
    message = git("cat-file", "commit", result.sha, cwd=repo).split("\n\n", 1)[1]
    assert message == (
        "Add workspace a\n\nTwo changes in one commit.\n\n"
        "Hexabase-Change-Id: chg-1\n"
        "Hexabase-Actor: alice@example.com\n"
        "Hexabase-Request-Id: req-1\n"
        "Hexabase-Change-Id: chg-2\n"
        "Hexabase-Actor: bob@example.com\n"
        "Hexabase-Request-Id: req-2\n"
    )
    # git itself reads them as trailers, in order
    parsed = git("log", "-1", "--format=%(trailers:only,unfold)", "main", cwd=repo).split("\n")
    assert [line for line in parsed if line] == [
        "Hexabase-Change-Id: chg-1",
        "Hexabase-Actor: alice@example.com",
        "Hexabase-Request-Id: req-1",
        "Hexabase-Change-Id: chg-2",
        "Hexabase-Actor: bob@example.com",
        "Hexabase-Request-Id: req-2",
    ]
    [record] = store.log(ORG, limit=1)
    assert record.changes == tuple(changes)
    assert record.author == BOB and record.committer == HEXABASE
    assert record.subject == "Add workspace a" and record.parents == (result.parent,)


def test_trailer_values_must_be_single_lines() -> None:
    with pytest.raises(ValueError):
        ChangeTrailer(change_id="a\nHexabase-Change-Id: forged", actor="x", request_id="r")
    with pytest.raises(ValueError):
        format_message("two\nlines")
    with pytest.raises(ValueError):
        Person("Mallory <evil@x>", "m@x")


def test_parse_change_trailers_ignores_the_body_and_foreign_trailers() -> None:
    message = format_message("s", [change(7)], body="Hexabase-Change-Id: chg-body")
    message += "Signed-off-by: Eve <eve@example.com>\n"
    assert parse_change_trailers(message) == (change(7),)
    assert parse_change_trailers("just a subject\n") == ()


def test_committed_change_ids_finds_recent_changes_only(store: GitStore, repo: Path) -> None:
    for i in range(5):
        store.commit(
            ORG,
            writes={p(f"host/f{i}.yaml"): b"x"},
            author=ALICE,
            subject=f"c{i}",
            changes=[change(i), change(f"{i}b")],
        )
    ids = {"chg-0", "chg-3", "chg-4b", "chg-unknown"}
    assert store.committed_change_ids(ORG, ids) == {"chg-0", "chg-3", "chg-4b"}
    assert store.committed_change_ids(ORG, ids, depth=2) == {"chg-3", "chg-4b"}


def test_read_helpers(store: GitStore, repo: Path) -> None:
    first = store.head(ORG)
    commit(store, {p("host/kustomization.yaml"): b"resources: [a]\n"})
    assert store.read_file(ORG, "host/kustomization.yaml") == b"resources: [a]\n"
    assert store.read_file(ORG, "host/kustomization.yaml", rev=first) == b"resources: []\n"
    assert store.read_file(ORG, "host/missing.yaml") is None
    assert store.read_file(ORG, "host") is None
    log = store.log(ORG)
    assert [r.subject for r in log] == ["test", "Create organization acme"]
    assert log[0].parents == (first,) and log[1].parents == ()


# --------------------------------------------------------------------------- commit_rendered


def rendered_files(*projects: tuple[str, str], tag: str = "v1") -> dict[PurePosixPath, bytes]:
    out = {p("host/kustomization.yaml"): b"resources: []\n"}
    for ws, proj in projects:
        out |= project_files(ws, proj, tag)
        out[p(f"workspaces/{ws}/kustomization.yaml")] = b"kind: Kustomization\n"
    return out


def rendered_commit(
    store: GitStore,
    rendered: dict[PurePosixPath, bytes],
    predicate: Callable[[PurePosixPath], bool] = is_managed,
    **kw: Any,
) -> CommitResult:
    return store.commit_rendered(
        ORG, rendered, is_managed=predicate, author=ALICE, subject="render", **kw
    )


def test_commit_rendered_writes_only_differing_blobs(store: GitStore, repo: Path) -> None:
    rendered_commit(store, rendered_files(("w", "a"), ("w", "b")))
    before = loose_objects(repo)
    new = rendered_files(("w", "a"), ("w", "b"))
    new[p("workspaces/w/projects/b/namespace.yaml")] = b"name: b # v2\n"
    result = rendered_commit(store, new)
    assert result.written == (p("workspaces/w/projects/b/namespace.yaml"),)
    assert result.deleted == ()
    blobs = [
        o for o in loose_objects(repo) - before if git("cat-file", "-t", o, cwd=repo) == "blob\n"
    ]
    assert blobs == [str(pygit2.hash(b"name: b # v2\n"))]


def test_redelivered_render_makes_no_commit(store: GitStore, repo: Path) -> None:
    first = rendered_commit(store, rendered_files(("w", "a")), changes=[change(1)])
    again = rendered_commit(store, rendered_files(("w", "a")), changes=[change(1)])
    assert first.committed and not again.committed
    assert again.sha == first.sha == store.head(ORG)


def test_commit_rendered_deletes_unrendered_managed_files_and_never_reads_apps(
    store: GitStore, repo: Path
) -> None:
    rendered_commit(store, rendered_files(("w", "a"), ("w", "b")))
    engineer_commit(repo, repo.parent / "eve", "workspaces/w/projects/b/apps/app.yaml", "app\n")
    engineer_commit(repo, repo.parent / "eve", "notes/todo.md", "todo\n")
    # Remove the apps/ tree object itself: any attempt to read inside apps/ now fails loudly.
    apps_tree = tree_id(repo, "main", "workspaces/w/projects/b/apps")
    loose = repo / "objects" / apps_tree[:2] / apps_tree[2:]
    assert loose.is_file()
    loose.unlink()
    asked: list[PurePosixPath] = []

    def watching(path: PurePosixPath) -> bool:
        asked.append(path)
        return is_managed(path)

    result = rendered_commit(store, rendered_files(("w", "a")), watching)
    assert set(result.deleted) == {
        p("workspaces/w/projects/b/namespace.yaml"),
        p("workspaces/w/projects/b/resourcequota.yaml"),
        p("workspaces/w/projects/b/roles/dev.yaml"),
    }
    assert p("workspaces/w/projects/b/apps/app.yaml") not in asked
    listing = git("ls-tree", "main:workspaces/w/projects/b", cwd=repo)
    assert listing == f"040000 tree {apps_tree}\tapps\n"
    assert store.read_file(ORG, "notes/todo.md") == b"todo\n"
    assert store.read_file(ORG, "README.md") == SKELETON[p("README.md")]


def test_commit_rendered_refuses_unmanaged_paths(store: GitStore, repo: Path) -> None:
    head = store.head(ORG)
    for path in ("workspaces/w/projects/a/apps/x.yaml", "notes/x.md", "README.md"):
        with pytest.raises(UnsafePathError, match="not a managed path"):
            rendered_commit(store, {p(path): b"x"})
    assert store.head(ORG) == head


def test_commit_rendered_leaves_unmanaged_files_alone(store: GitStore, repo: Path) -> None:
    result = rendered_commit(store, {})
    assert result.deleted == (p("host/kustomization.yaml"),)
    assert files_at(repo) == {"README.md", "hexabase.yaml"}


def test_real_renderer_output_round_trips(store: GitStore) -> None:
    """The worker's path: create from skeleton_files, commit render(spec), re-deliver, shrink."""
    spec = factories.small_org()
    store.create("small", skeleton_files(spec.organization), author=ALICE, subject="create")
    files = render(spec)
    first = store.commit_rendered(
        "small", files, is_managed=renderer_is_managed, author=ALICE, subject="render"
    )
    assert first.committed
    bare = store.path("small")
    assert files_at(bare) == {str(k) for k in files}
    for path, data in files.items():
        assert store.read_file("small", path) == data
    again = store.commit_rendered(
        "small", render(spec), is_managed=renderer_is_managed, author=ALICE, subject="render"
    )
    assert not again.committed and again.sha == first.sha
    workspace = spec.workspaces[0]
    smaller = spec.model_copy(update={"workspaces": spec.workspaces[1:]})
    shrunk = store.commit_rendered(
        "small", render(smaller), is_managed=renderer_is_managed, author=ALICE, subject="drop ws"
    )
    gone = {k for k in files if k not in render(smaller)}
    assert set(shrunk.deleted) == gone and gone
    assert all(workspace.name in k.parts for k in gone)
    assert files_at(bare) == {str(k) for k in render(smaller)}
    fsck(bare)


def test_commit_rendered_with_scope_deletes_only_inside_it(store: GitStore, repo: Path) -> None:
    rendered_commit(store, rendered_files(("w", "a"), ("x", "b")))
    scoped = {
        k: v
        for k, v in rendered_files(("w", "a"), tag="v2").items()
        if k.parts[:2] == ("workspaces", "w")
    }
    result = rendered_commit(store, scoped, scope=["workspaces/w"])
    assert result.committed and result.deleted == ()
    assert store.read_file(ORG, "workspaces/x/projects/b/namespace.yaml") == b"name: b # v1\n"
    assert store.read_file(ORG, "host/kustomization.yaml") == b"resources: []\n"
    assert store.read_file(ORG, "workspaces/w/projects/a/namespace.yaml") == b"name: a # v2\n"
    gone = rendered_commit(store, {}, scope=["workspaces/x/projects/b"])
    assert len(gone.deleted) == 3 and store.read_file(ORG, "workspaces/x/kustomization.yaml")
    with pytest.raises(UnsafePathError, match="outside the scope"):
        rendered_commit(store, rendered_files(("w", "a")), scope=["workspaces/w"])


# --------------------------------------------------------------------------- compare-and-swap


class RacingStore(GitStore):
    """Lets an engineer push a real commit between our plan and our ref update, once."""

    def __init__(self, root: Path, *, race: Callable[[], object], **kw: Any) -> None:
        super().__init__(root, **kw)
        self.race: Callable[[], object] | None = race

    def _before_ref_update(self, org_id: str, planned_head: str) -> None:
        if self.race is not None:
            race, self.race = self.race, None
            race()


def test_engineer_commit_between_plan_and_ref_update_survives(store: GitStore, repo: Path) -> None:
    rendered_commit(store, rendered_files(("w", "a")))
    eve = repo.parent / "eve"
    pushed: list[str] = []

    def race() -> None:
        pushed.append(engineer_commit(repo, eve, "workspaces/w/projects/a/apps/app.yaml", "mine\n"))

    racing = RacingStore(store.root, committer=HEXABASE, race=race)
    result = racing.commit_rendered(
        ORG,
        rendered_files(("w", "a"), ("w", "b")),
        is_managed=is_managed,
        author=ALICE,
        subject="b",
    )
    assert result.attempts == 2 and result.parent == pushed[0]
    assert store.read_file(ORG, "workspaces/w/projects/a/apps/app.yaml") == b"mine\n"
    assert store.read_file(ORG, "workspaces/w/projects/b/namespace.yaml") == b"name: b # v1\n"
    fsck(repo)


def test_low_level_commit_reapplies_on_the_new_head_after_a_lost_race(
    store: GitStore, repo: Path
) -> None:
    racing = RacingStore(
        store.root,
        committer=HEXABASE,
        race=lambda: engineer_commit(repo, repo.parent / "eve", "notes/x.md", "x\n"),
    )
    result = racing.commit(ORG, writes={p("host/a.yaml"): b"a\n"}, author=ALICE, subject="a")
    assert result.attempts == 2
    assert {"notes/x.md", "host/a.yaml"} <= files_at(repo)


def test_expected_head_is_enforced(store: GitStore, repo: Path) -> None:
    stale = store.head(ORG)
    commit(store, {p("host/a.yaml"): b"a\n"})
    with pytest.raises(ConcurrentUpdateError, match="expected"):
        commit(store, {p("host/b.yaml"): b"b\n"}, expected_head=stale)
    racing = RacingStore(
        store.root,
        committer=HEXABASE,
        race=lambda: engineer_commit(repo, repo.parent / "eve", "notes/x.md", "x\n"),
    )
    head = store.head(ORG)
    with pytest.raises(ConcurrentUpdateError, match="moved away"):
        racing.commit(
            ORG, writes={p("host/b.yaml"): b"b\n"}, author=ALICE, subject="b", expected_head=head
        )
    assert "host/b.yaml" not in files_at(repo)


def test_held_ref_lock_is_never_broken(tmp_path: Path, repo: Path) -> None:
    store = GitStore(tmp_path / "repos", committer=HEXABASE, max_attempts=3)
    head = store.head(ORG)
    lock = repo / "refs/heads/main.lock"
    lock.write_text("held by another writer\n")
    with pytest.raises(ConcurrentUpdateError, match="gave up after 3"):
        commit(store, {p("host/a.yaml"): b"a\n"})
    assert lock.read_text() == "held by another writer\n"
    lock.unlink()
    assert store.head(ORG) == head
    assert commit(store, {p("host/a.yaml"): b"a\n"}).committed


def _race_worker(
    root: str, who: str, rounds: int, rendered: bool, start: object, out: object
) -> None:
    """One of two processes hammering the same repository (module level: spawn imports it)."""
    store = GitStore(root, committer=HEXABASE, max_attempts=60)
    start.wait()  # type: ignore[attr-defined]
    attempts = []
    for i in range(rounds):
        files = {p(f"workspaces/{who}/projects/p{j}/namespace.yaml"): b"ns\n" for j in range(i + 1)}
        if rendered:
            result = store.commit_rendered(
                ORG,
                files,
                is_managed=is_managed,
                author=ALICE,
                subject=f"{who} {i}",
                changes=[change(f"{who}-{i}")],
                scope=[f"workspaces/{who}"],
            )
        else:
            last = p(f"workspaces/{who}/projects/p{i}/namespace.yaml")
            result = store.commit(
                ORG,
                writes={last: b"ns\n"},
                author=ALICE,
                subject=f"{who} {i}",
                changes=[change(f"{who}-{i}")],
            )
        assert result.committed
        attempts.append(result.attempts)
    out.put((who, attempts))  # type: ignore[attr-defined]


@pytest.mark.parametrize("rendered", [False, True], ids=["commit", "commit_rendered"])
def test_two_processes_racing_lose_nothing(store: GitStore, repo: Path, rendered: bool) -> None:
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    rounds = 25
    procs = [
        ctx.Process(target=_race_worker, args=(str(store.root), who, rounds, rendered, start, out))
        for who in ("red", "blue")
    ]
    for proc in procs:
        proc.start()
    start.set()
    results = dict(out.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    files = files_at(repo)
    for who in ("red", "blue"):
        for j in range(rounds):
            assert f"workspaces/{who}/projects/p{j}/namespace.yaml" in files
    # one linear history: every change committed exactly once
    history = store.log(ORG, limit=1000)
    assert len(history) == 1 + 2 * rounds
    ids = [c.change_id for r in history for c in r.changes]
    assert sorted(ids) == sorted(f"chg-{w}-{i}" for w in ("red", "blue") for i in range(rounds))
    assert git("rev-list", "--count", "--merges", "main", cwd=repo).strip() == "0"
    print("attempts per commit:", results)
    fsck(repo)


# --------------------------------------------------------------------------- push


def test_commit_is_pushed_to_a_local_bare_remote(tmp_path: Path) -> None:
    remotes = tmp_path / "remotes"
    remotes.mkdir()
    store = GitStore(tmp_path / "repos", committer=HEXABASE, push_url=f"{remotes}/{{org_id}}.git")
    remote = remotes / "acme.git"
    git("init", "-q", "--bare", "-b", "main", str(remote), cwd=tmp_path)
    created = store.create(ORG, SKELETON, author=ALICE, subject="create")
    assert created.push_error is None
    result = commit(store, {p("host/a.yaml"): b"a\n"})
    assert result.push_error is None
    assert git("rev-parse", "main", cwd=remote).strip() == result.sha == store.head(ORG)

    # the remote diverges: the push is refused, the local commit stands and says why
    engineer_commit(remote, tmp_path / "eve", "notes/x.md", "x\n")
    refused = commit(store, {p("host/b.yaml"): b"b\n"})
    assert refused.committed and refused.push_error is not None
    assert store.head(ORG) == refused.sha
    assert git("rev-parse", "main", cwd=remote).strip() != refused.sha


def test_stale_main_lock_left_by_a_dead_writer_is_removed(tmp_path: Path) -> None:
    store = GitStore(tmp_path, durability="none", stale_lock_seconds=1.0)
    store.create("org-lock", {PurePosixPath("README.md"): b"hi\n"}, author=ALICE, subject="init")
    lock = store.path("org-lock") / "refs" / "heads" / "main.lock"
    lock.write_text("0" * 40 + "\n")
    os.utime(lock, (time.time() - 120, time.time() - 120))  # left two minutes ago
    result = store.commit(
        "org-lock", writes={"host/a.yaml": b"a: 1\n"}, author=ALICE, subject="after crash"
    )
    assert result.committed and not lock.exists()


def test_fresh_main_lock_is_respected(tmp_path: Path) -> None:
    store = GitStore(tmp_path, durability="none", stale_lock_seconds=60.0, max_attempts=2)
    store.create("org-busy", {PurePosixPath("README.md"): b"hi\n"}, author=ALICE, subject="init")
    lock = store.path("org-busy") / "refs" / "heads" / "main.lock"
    lock.write_text("0" * 40 + "\n")  # someone (git itself) holds it right now
    with pytest.raises(ConcurrentUpdateError):
        store.commit("org-busy", writes={"host/a.yaml": b"a: 1\n"}, author=ALICE, subject="x")
    assert lock.exists()


def test_commit_rendered_notices_an_external_edit_of_a_managed_file(tmp_path: Path) -> None:
    """The store remembers the last full render per head; a commit made elsewhere moves the
    head, so the next render is planned against the tree and the managed file is restored."""
    store = GitStore(tmp_path, durability="none")
    spec = factories.small_org()
    org = spec.organization.id
    store.create(org, skeleton_files(spec.organization), author=ALICE, subject="init")
    rendered = render(spec)
    first = store.commit_rendered(
        org, rendered, is_managed=renderer_is_managed, author=ALICE, subject="render"
    )
    assert first.committed
    again = store.commit_rendered(
        org, rendered, is_managed=renderer_is_managed, author=ALICE, subject="render"
    )
    assert not again.committed and again.sha == first.sha
    managed = PurePosixPath("workspaces/dev/kustomization.yaml")
    store.commit(org, writes={managed: b"tampered: true\n"}, author=ALICE, subject="by hand")
    restored = store.commit_rendered(
        org, rendered, is_managed=renderer_is_managed, author=ALICE, subject="render"
    )
    assert restored.committed and restored.written == (managed,)
    assert store.read_file(org, managed) == rendered[managed]


def test_contains_answers_by_ancestry(tmp_path: Path) -> None:
    store = GitStore(tmp_path, durability="none")
    store.create("org-anc", {PurePosixPath("README.md"): b"hi\n"}, author=ALICE, subject="init")
    first = store.commit("org-anc", writes={"host/a.yaml": b"a\n"}, author=ALICE, subject="a").sha
    second = store.commit("org-anc", writes={"host/b.yaml": b"b\n"}, author=ALICE, subject="b").sha
    assert store.contains("org-anc", second, first)  # a later commit carries the earlier one
    assert store.contains("org-anc", first, first)
    assert not store.contains("org-anc", first, second)
    assert not store.contains("org-anc", "f" * 40, first)  # unknown to this repository
