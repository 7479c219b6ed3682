"""The Kubernetes adapter: list and watch Flux objects on the host. Only this module imports
the kubernetes client."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException


@dataclass(frozen=True)
class Kind:
    kind: str
    group: str
    version: str
    plural: str


FLUX_KINDS = (
    Kind("GitRepository", "source.toolkit.fluxcd.io", "v1", "gitrepositories"),
    Kind("Kustomization", "kustomize.toolkit.fluxcd.io", "v1", "kustomizations"),
    Kind("HelmRelease", "helm.toolkit.fluxcd.io", "v2", "helmreleases"),
)


class Gone(Exception):
    """410: the resourceVersion is too old to resume from; list again."""


class Unavailable(Exception):
    """The API server could not be reached or answered with a server error; retry later."""


class FluxApi:
    def __init__(self, kubeconfig: str) -> None:
        self.api_client = config.new_client_from_config(config_file=kubeconfig)
        self.custom = client.CustomObjectsApi(self.api_client)

    def close(self) -> None:
        self.api_client.close()

    def list(self, kind: Kind) -> tuple[list[dict[str, Any]], str]:
        try:
            result: Any = self.custom.list_cluster_custom_object(
                kind.group, kind.version, kind.plural
            )
        except ApiException as error:
            if error.status == 410:
                raise Gone(str(error)) from error
            raise Unavailable(f"listing {kind.plural}: {error.status} {error.reason}") from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise Unavailable(f"listing {kind.plural}: {error}") from error
        items = [dict(item, kind=kind.kind) for item in result.get("items", [])]
        return items, str(result["metadata"]["resourceVersion"])

    def watch(
        self, kind: Kind, resource_version: str, *, timeout_seconds: int = 60
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(type, object) from resource_version on: ADDED, MODIFIED, DELETED, BOOKMARK."""
        stream = watch.Watch()
        try:
            for event in stream.stream(
                self.custom.list_cluster_custom_object,
                kind.group,
                kind.version,
                kind.plural,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout_seconds,
                # A read timeout past the server's own: a connection that went silent (the
                # API server vanished without closing it) ends instead of hanging forever.
                _request_timeout=(10, timeout_seconds + 15),
            ):
                obj = event["object"] if isinstance(event["object"], dict) else {}
                if event["type"] == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone(str(obj.get("message", "")))
                    raise Unavailable(str(obj.get("message", "watch error")))
                yield str(event["type"]), dict(obj, kind=kind.kind)
        except ApiException as error:
            if error.status == 410:
                raise Gone(str(error)) from error
            raise Unavailable(f"watching {kind.plural}: {error.status} {error.reason}") from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise Unavailable(f"watching {kind.plural}: {error}") from error
        finally:
            stream.stop()
