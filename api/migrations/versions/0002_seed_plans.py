"""Seed the plans every installation starts with: starter, standard, dedicated.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PUBLIC_REGISTRIES = ["docker.io", "ghcr.io", "quay.io", "registry.k8s.io", "gcr.io"]
DEDICATED_NODE = "hexabase.io/dedicated"

PLANS = [
    {
        "name": "starter",
        "display_name": "Starter",
        "quota": {
            "requests.cpu": "2",
            "requests.memory": "4Gi",
            "limits.cpu": "4",
            "limits.memory": "8Gi",
            "pods": "20",
        },
        "limit_range": {
            "default": {"cpu": "500m", "memory": "512Mi"},
            "default_request": {"cpu": "100m", "memory": "128Mi"},
            "max": {"cpu": "2", "memory": "2Gi"},
        },
        "node_selector": {},
        "tolerations": [],
        "allowed_registries": PUBLIC_REGISTRIES,
    },
    {
        "name": "standard",
        "display_name": "Standard",
        "quota": {
            "requests.cpu": "8",
            "requests.memory": "16Gi",
            "limits.cpu": "16",
            "limits.memory": "32Gi",
            "pods": "100",
        },
        "limit_range": {
            "default": {"cpu": "1", "memory": "1Gi"},
            "default_request": {"cpu": "250m", "memory": "256Mi"},
            "max": {"cpu": "4", "memory": "8Gi"},
        },
        "node_selector": {},
        "tolerations": [],
        "allowed_registries": PUBLIC_REGISTRIES,
    },
    {
        "name": "dedicated",
        "display_name": "Dedicated nodes",
        "quota": {
            "requests.cpu": "32",
            "requests.memory": "64Gi",
            "limits.cpu": "64",
            "limits.memory": "128Gi",
            "pods": "500",
        },
        "limit_range": {
            "default": {"cpu": "1", "memory": "1Gi"},
            "default_request": {"cpu": "250m", "memory": "256Mi"},
            "max": {"cpu": "16", "memory": "32Gi"},
        },
        "node_selector": {DEDICATED_NODE: "true"},
        "tolerations": [
            {"key": DEDICATED_NODE, "operator": "Equal", "value": "true", "effect": "NoSchedule"}
        ],
        "allowed_registries": [],
    },
]


def upgrade() -> None:
    plans = sa.table(
        "plans",
        sa.column("id", sa.String),
        sa.column("name", sa.String),
        sa.column("display_name", sa.String),
        sa.column("quota", sa.JSON),
        sa.column("limit_range", sa.JSON),
        sa.column("node_selector", sa.JSON),
        sa.column("tolerations", sa.JSON),
        sa.column("allowed_registries", sa.JSON),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    op.bulk_insert(
        plans,
        [
            {
                **plan,
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"hexabase:plan:{plan['name']}")),
                "created_at": datetime.now(UTC),
            }
            for plan in json.loads(json.dumps(PLANS))
        ],
    )


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM plans WHERE name IN ('starter', 'standard', 'dedicated')"))
