"""The status watcher: Flux objects on the host -> workspace, project and change states in
PostgreSQL, and live events on NATS.

One thread per Flux kind lists, then watches from the list's resourceVersion (bookmarks
move it along; 410 Gone lists again; a lost API server is retried with backoff). Every
event re-evaluates its organization (api.statusmap) and records only real transitions. On
start (and after a restart) the first list re-evaluates everything, and states are derived
from current status, so no final state is missed while the watcher was down. Several
watchers may run: only the holder of a PostgreSQL advisory lock acts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from api.db import status as db_status
from api.db.session import Sessions
from api.kube import FLUX_KINDS, FluxApi, Gone, Kind, Unavailable
from api.statusmap import ObjectKey, evaluate, organization_of
from reconciler.gitstore import TenantRepoStore

log = logging.getLogger("hexabase.watcher")

Publish = Callable[[db_status.Transition], None]


@dataclass
class StatusWatcher:
    api: FluxApi
    sessions: Sessions
    store: TenantRepoStore
    publish: Publish = lambda _: None
    watch_timeout: int = 60
    recheck_every: float = 1.0
    objects: dict[ObjectKey, dict[str, Any]] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    synced: dict[str, threading.Event] = field(default_factory=dict)

    # -- evaluation ----------------------------------------------------------------------

    def evaluate_organization(self, org_name: str) -> list[db_status.Transition]:
        org = db_status.organization_status(self.sessions, org_name)
        if org is None:
            return []
        with self._lock:
            snapshot = dict(self.objects)

        def contains(revision: str, commit: str) -> bool:
            return self.store.exists(org.id) and self.store.contains(org.id, revision, commit)

        complete = len(self.synced) == len(FLUX_KINDS)
        written = db_status.record(
            self.sessions, evaluate(org, snapshot, contains, complete=complete)
        )
        for transition in written:
            log.info(
                "%s %s %s -> %s%s",
                org_name,
                transition.entity,
                transition.entity_id,
                transition.state,
                f": {transition.reason}" if transition.reason else "",
            )
            self.publish(transition)
        return written

    def _evaluate_safely(self, orgs: set[str]) -> None:
        for org in sorted(orgs):
            try:
                self.evaluate_organization(org)
            except Exception:
                log.exception(
                    "evaluating organization %s failed; it is retried on the next event", org
                )

    # -- list, then watch ----------------------------------------------------------------

    def _key(self, obj: dict[str, Any]) -> ObjectKey:
        meta = obj.get("metadata") or {}
        return (str(obj["kind"]), str(meta.get("namespace", "")), str(meta.get("name", "")))

    def _relist(self, kind: Kind) -> str:
        items, resource_version = self.api.list(kind)
        with self._lock:
            before = {k for k in self.objects if k[0] == kind.kind}
            for key in before:
                del self.objects[key]
            for item in items:
                self.objects[self._key(item)] = item
            after = {k for k in self.objects if k[0] == kind.kind}
        orgs = {o for k in before | after if (o := organization_of(k[1]))}
        self._evaluate_safely(orgs)
        self.synced.setdefault(kind.kind, threading.Event()).set()
        return resource_version

    def watch_kind(self, kind: Kind) -> None:
        resource_version: str | None = None
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                if resource_version is None:
                    resource_version = self._relist(kind)
                for event_type, obj in self.api.watch(
                    kind, resource_version, timeout_seconds=self.watch_timeout
                ):
                    resource_version = str(
                        (obj.get("metadata") or {}).get("resourceVersion") or resource_version
                    )
                    if event_type == "BOOKMARK":
                        continue
                    key = self._key(obj)
                    with self._lock:
                        if event_type == "DELETED":
                            self.objects.pop(key, None)
                        else:
                            self.objects[key] = obj
                    org = organization_of(key[1])
                    if org:
                        self._evaluate_safely({org})
                    if self.stopping.is_set():
                        return
                backoff = 0.5
            except Gone:
                log.info("%s: resourceVersion expired (410); listing again", kind.plural)
                resource_version = None
            except Unavailable as error:
                log.warning("%s: %s; retrying in %.1f s", kind.plural, error, backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def recheck_forever(self) -> None:
        """Organizations with committed changes are re-evaluated periodically: a change may be
        marked committed after Flux already applied its revision."""
        while not self.stopping.wait(self.recheck_every):
            try:
                self._evaluate_safely(set(db_status.organizations_waiting(self.sessions)))
            except Exception:
                log.exception("recheck failed")

    def run(self) -> None:
        threads = [
            threading.Thread(target=self.watch_kind, args=(kind,), daemon=True, name=kind.plural)
            for kind in FLUX_KINDS
        ]
        threads.append(threading.Thread(target=self.recheck_forever, daemon=True, name="recheck"))
        for thread in threads:
            thread.start()
        while not self.stopping.wait(0.5):
            pass
        # A thread blocked in a watch wakes at its timeout; they are daemons, so a process
        # that is stopping does not wait for them beyond a moment.
        for thread in threads:
            thread.join(timeout=1.0)


def run_as_leader(
    watcher: StatusWatcher, *, name: str = "status-watcher", poll: float = 1.0
) -> None:
    """Run the watcher only while holding the leader lock; stand by until then."""
    with db_status.leader(watcher.sessions, name) as try_acquire:
        announced = False
        while not watcher.stopping.is_set():
            if try_acquire():
                log.info("this watcher is the leader")
                watcher.run()
                return
            if not announced:
                log.info("another watcher is the leader; standing by")
                announced = True
            watcher.stopping.wait(poll)


def nats_publisher(loop: asyncio.AbstractEventLoop, queue: Any) -> Publish:
    """Publish transitions through the API's NATS subjects, from the watcher's threads."""

    def publish(t: db_status.Transition) -> None:
        body = {
            "entity": t.entity,
            "id": t.entity_id,
            "state": t.state,
            "reason": t.reason,
            "raw": t.raw,
            "observed_at": t.observed_at.isoformat() if t.observed_at else None,
            "recorded_at": time.time(),
        }
        change_id = int(t.entity_id) if t.entity == "change" else None
        future = asyncio.run_coroutine_threadsafe(
            queue.publish_event(change_id, t.organization_id, body), loop
        )
        try:
            future.result(timeout=5)
        except Exception:
            log.exception("could not publish %s %s -> %s", t.entity, t.entity_id, t.state)

    return publish
