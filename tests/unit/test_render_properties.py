"""Property tests: values and names with YAML or path metacharacters never break the output.

Covers:
- any string survives yamlio's emitter, read back by libyaml (YAML 1.1, as Go readers) and by
  ruamel.yaml (YAML 1.2), and the templates' `q` filter, including nested data;
- free-text values in a spec (env values, command, args) render to valid YAML and come back
  exactly;
- names (project, workspace, CronJob) are either refused by the spec or render to relative,
  normalised paths inside the repository, never under apps/.
"""

from __future__ import annotations

import io
from pathlib import PurePosixPath
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from ruamel.yaml import YAML

from reconciler import yamlio
from reconciler.render import is_managed, render
from reconciler.spec import CronJobSpec, EnvVar
from tests import factories

# YAML can carry any Unicode scalar value; hypothesis's text() already leaves out surrogates.
texts = st.text(max_size=60)
tricky = st.sampled_from(
    ["a: b\n- c", "../../etc", "on", "yes", "~", "null", "0755", "1e3", "- x", "#x", "'", '"',
     "\\", "{a}", "[1]", "*ref", "&a", "!tag", "%YAML", "---", "...", " x", "x ", "\t", "\x85",
     "\u2028", "\ufeff", "\x7f", "\x00", "é", "😀", "key: &a [*a]", "|\n  x", ">"]
)  # fmt: skip
values = st.one_of(texts, tricky)
data: st.SearchStrategy[Any] = st.recursive(
    st.one_of(values, st.integers(), st.booleans(), st.none()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(values, inner, max_size=4)
    ),
    max_leaves=12,
)


def _ruamel_load(text: str) -> Any:
    return YAML(typ="safe", pure=True).load(io.StringIO(text))


@given(data)
def test_any_data_round_trips_through_the_canonical_emitter(value: Any) -> None:
    document = {"value": value}
    text = yamlio.dump(document)
    assert yamlio.load(text) == document  # YAML 1.1 reader
    assert _ruamel_load(text) == document  # YAML 1.2 reader
    assert yamlio.dump(yamlio.load(text)) == text  # canonical: a fixed point


@given(data)
def test_q_filter_output_is_data_never_syntax(value: Any) -> None:
    text = "key: " + yamlio.flow(value) + "\n"
    assert yamlio.load(text) == {"key": value}
    assert _ruamel_load(text) == {"key": value}


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    env_value=values.filter(lambda v: len(v) <= 4096),
    args=st.lists(values, max_size=3),
)
def test_free_text_values_render_and_round_trip_exactly(env_value: str, args: list[str]) -> None:
    cronjob = CronJobSpec(
        name="job",
        schedule="*/5 * * * *",
        image="ghcr.io/acme/job:1",
        command=tuple(args),
        args=tuple(args),
        env=(EnvVar(name="VALUE", value=env_value),),
    )
    spec = factories.tenant(
        workspaces=(factories.workspace(projects=(factories.project("web", cronjobs=(cronjob,)),)),)
    )
    files = render(spec)
    text = files[PurePosixPath("workspaces/dev/projects/web/cronjobs/job.yaml")].decode("utf-8")
    container = yamlio.load(text)["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][
        0
    ]
    assert container["env"] == [{"name": "VALUE", "value": env_value}]
    assert container.get("args", []) == args
    assert (
        _ruamel_load(text)["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        == container
    )


def _build(factory: Any, **kwargs: Any) -> Any:
    try:
        return factory(**kwargs)
    except ValidationError:
        return None


names = st.one_of(tricky, st.text(max_size=70), st.from_regex(r"[a-z0-9-]{1,63}", fullmatch=True))


@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(workspace=names, project=names, job=names)
def test_names_are_refused_or_render_inside_the_repository(
    workspace: str, project: str, job: str
) -> None:
    cron = _build(CronJobSpec, name=job, schedule="@daily", image="ghcr.io/a/b:1")
    proj = cron and _build(factories.project, name=project, cronjobs=(cron,))
    ws = proj and _build(factories.workspace, name=workspace, projects=(proj,))
    spec = ws and _build(factories.tenant, workspaces=(ws,))
    if spec is None:
        return  # refused by the spec, before any template sees it
    try:
        files = render(spec)
    except ValueError as exc:  # e.g. a host namespace over 63 characters: refused, named
        assert "namespace.yaml" in str(exc)
        return
    for path in files:
        assert not path.is_absolute()
        assert ".." not in path.parts and "." not in path.parts
        assert str(PurePosixPath(*path.parts)) == str(path)
        assert "apps" not in path.parts[4:5] or path.parts[2] != "projects"
        assert is_managed(path) or str(path) in {"README.md", "hexabase.yaml"}


@pytest.mark.parametrize("name", ["a: b\n- c", "../../etc", "A", "-a", "a_b", "a" * 64, ""])
def test_metacharacter_names_are_refused_by_the_spec(name: str) -> None:
    with pytest.raises(ValidationError):
        factories.project(name)
