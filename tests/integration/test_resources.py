"""Every kind of resource the API manages reaches the tenant repository, and leaves it again:
roles, bindings, CronJobs and Functions are rendered where the layout says; deleting a
project removes its managed files and keeps what engineers committed under its apps/;
group trees refuse cycles; a plan change re-renders the workspace."""

from __future__ import annotations

from typing import Any

import httpx

from api.localstack import Stack
from reconciler.gitstore import Person

ORG, WS = "globex", "prod"
BASE = f"/api/v1/organizations/{ORG}/workspaces/{WS}"


def settle(stack: Stack, client: httpx.Client, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    change = stack.wait_change(client, response.json()["change"])
    assert change["state"] == "committed", change
    return change


def test_roles_bindings_cronjobs_functions_render_and_projects_delete_cleanly(stack: Stack) -> None:
    with stack.client(stack.token("gina@example.com", "Gina")) as client:
        r = client.post("/api/v1/organizations", json={"name": ORG})
        org_id = r.json()["resource"]["id"]
        settle(stack, client, r)
        settle(
            stack,
            client,
            client.post(
                f"/api/v1/organizations/{ORG}/workspaces", json={"name": WS, "plan": "starter"}
            ),
        )
        settle(
            stack,
            client,
            client.post(f"{BASE}/projects", json={"name": "shop", "quota": {"pods": "10"}}),
        )
        settle(
            stack,
            client,
            client.post(f"{BASE}/groups", json={"name": "Deployers", "parent": "WSUsers"}),
        )
        settle(
            stack,
            client,
            client.post(
                f"{BASE}/projects/shop/roles",
                json={
                    "name": "deployer",
                    "rules": [
                        {
                            "api_groups": ["apps"],
                            "resources": ["deployments"],
                            "verbs": ["get", "update"],
                        }
                    ],
                },
            ),
        )
        settle(
            stack,
            client,
            client.post(
                f"{BASE}/rolebindings",
                json={
                    "name": "deployers",
                    "group": "Deployers",
                    "project": "shop",
                    "project_role": "deployer",
                },
            ),
        )
        settle(
            stack,
            client,
            client.post(
                f"{BASE}/projects/shop/cronjobs",
                json={
                    "name": "nightly",
                    "schedule": "0 3 * * *",
                    "image": "docker.io/library/busybox:1.36",
                    "command": ["sh", "-c", "echo 'a: b'"],
                },
            ),
        )
        settle(
            stack,
            client,
            client.post(
                f"{BASE}/projects/shop/functions",
                json={
                    "name": "hello",
                    "image": "ghcr.io/acme/hello:1",
                    "env": [{"name": "GREETING", "value": "hi: there"}],
                },
            ),
        )
        project = f"{BASE}/projects/shop"
        assert client.get(f"{project}/roles/deployer").json()["rules"][0]["verbs"] == [
            "get",
            "update",
        ]
        assert client.get(f"{project}/cronjobs/nightly").json()["schedule"] == "0 3 * * *"
        assert client.get(f"{project}/functions/hello").json()["image"] == "ghcr.io/acme/hello:1"
        assert client.get(f"{project}/functions/nope").status_code == 404
        read = lambda path: stack.store.read_file(org_id, path)  # noqa: E731
        shop = f"workspaces/{WS}/projects/shop"
        role = read(f"{shop}/roles/deployer.yaml")
        assert role is not None and b"deployments" in role
        bindings = read(f"{shop}/rolebindings.yaml")
        assert bindings is not None and b"oidc:Deployers" in bindings
        cronjob = read(f"{shop}/cronjobs/nightly.yaml")
        assert cronjob is not None and b"0 3 * * *" in cronjob and b"echo 'a: b'" in cronjob
        function = read(f"{shop}/functions/hello.yaml")
        assert (
            function is not None
            and b"serving.knative.dev/v1" in function
            and b"hi: there" in function
        )

        # An engineer commits under apps/; Hexabase must never touch it.
        stack.store.commit(
            org_id,
            writes={f"{shop}/apps/kustomization.yaml": b"kind: Component\n"},
            author=Person("Eng", "eng@example.com"),
            subject="my app",
        )
        settle(
            stack,
            client,
            client.patch(f"{BASE}/projects/shop/cronjobs/nightly", json={"suspend": True}),
        )
        assert b"suspend: true" in (read(f"{shop}/cronjobs/nightly.yaml") or b"")
        settle(stack, client, client.delete(f"{BASE}/projects/shop/functions/hello"))
        assert read(f"{shop}/functions/hello.yaml") is None

        settle(stack, client, client.delete(f"{BASE}/projects/shop"))
        for path in (
            "namespace.yaml",
            "resourcequota.yaml",
            "roles/deployer.yaml",
            "cronjobs/nightly.yaml",
        ):
            assert read(f"{shop}/{path}") is None, path
        assert read(f"{shop}/apps/kustomization.yaml") == b"kind: Component\n"
        assert client.get(f"{BASE}/rolebindings").json() == []  # went with its project


def test_group_tree_refuses_cycles_and_plan_change_rerenders(stack: Stack) -> None:
    with stack.client(stack.token("hank@example.com")) as client:
        r = client.post("/api/v1/organizations", json={"name": ORG})
        org_id = r.json()["resource"]["id"]
        settle(
            stack,
            client,
            client.post(
                f"/api/v1/organizations/{ORG}/workspaces", json={"name": WS, "plan": "starter"}
            ),
        )
        settle(
            stack, client, client.post(f"{BASE}/groups", json={"name": "Team", "parent": "WSUsers"})
        )
        settle(stack, client, client.post(f"{BASE}/groups", json={"name": "Sub", "parent": "Team"}))
        r = client.patch(f"{BASE}/groups/Team", json={"parent": "Sub"})
        assert r.status_code == 422 and "tree" in r.text
        r = client.patch(f"{BASE}/groups/WSAdmins", json={"parent": "Team"})
        assert r.status_code == 422 and "built in" in r.text
        groups = {g["name"]: g for g in client.get(f"{BASE}/groups").json()}
        assert groups["WSAdmins"]["members"] == ["hank@example.com"]
        assert groups["Sub"]["parent"] == "Team"

        before = stack.store.read_file(org_id, f"host/workspaces/{WS}/vcluster.yaml")
        settle(
            stack,
            client,
            client.patch(
                f"/api/v1/organizations/{ORG}/workspaces/{WS}", json={"plan": "dedicated"}
            ),
        )
        after = stack.store.read_file(org_id, f"host/workspaces/{WS}/vcluster.yaml")
        assert before != after and after is not None and b"hexabase.io/dedicated" in after
