"""A local Helm chart repository: the vCluster chart (from the github.com/loft-sh/vcluster Go
module) packaged with the real ``helm`` and served over HTTP with its ``index.yaml``, so
that Flux's source- and helm-controller fetch and install it as they would from
charts.loft.sh."""

from __future__ import annotations

import functools
import http.server
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from api.testbed import tools
from api.testbed.cluster import log


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _helm(helm: Path, *args: str | Path) -> None:
    proc = subprocess.run(
        [str(helm), *(str(a) for a in args)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"helm {' '.join(map(str, args))} failed:\n{proc.stderr.strip()}")


@dataclass
class ChartRepository:
    """``url`` is the Helm repository URL (``<url>/index.yaml``)."""

    directory: Path
    url: str
    charts: tuple[Path, ...]
    _server: http.server.ThreadingHTTPServer = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    @classmethod
    def start(cls, workdir: Path, chart_dirs: Sequence[Path] = ()) -> ChartRepository:
        """Package ``chart_dirs`` (default: the vCluster chart) into ``<workdir>/repo``,
        index them, and serve that directory on 127.0.0.1."""
        workdir = workdir.resolve()
        repo = workdir / "repo"
        repo.mkdir(parents=True, exist_ok=True)
        helm = tools.ensure_tools(["helm"])["helm"]
        if not chart_dirs:
            chart_dirs = [tools.copy_vcluster_chart(workdir / "src" / "vcluster")]
        for chart in chart_dirs:
            _helm(helm, "package", chart, "--destination", repo)
        handler = functools.partial(_QuietHandler, directory=str(repo))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        url = f"http://127.0.0.1:{server.server_address[1]}"
        # The index names absolute chart URLs, so it is written once the port is known.
        _helm(helm, "repo", "index", repo, "--url", url)
        thread = threading.Thread(target=server.serve_forever, name="chart-repo", daemon=True)
        thread.start()
        packaged = tuple(sorted(repo.glob("*.tgz")))
        log(f"serving Helm charts {[p.name for p in packaged]} at {url}")
        return cls(directory=repo, url=url, charts=packaged, _server=server, _thread=thread)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
