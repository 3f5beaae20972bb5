"""Process-local counters in Prometheus text format; no PHI in labels."""

from __future__ import annotations

import threading
from collections import Counter


class Metrics:
    """Request counters by route and status, and tile counters by source."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.tiles: Counter[str] = Counter()
        self.mllp: Counter[str] = Counter()
        self.ehr: Counter[str] = Counter()
        self.seconds: dict[str, float] = {}
        self.backup_last_success = 0.0
        self.backup_failures = 0

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, route, status)] += 1
            self.seconds[route] = self.seconds.get(route, 0.0) + seconds

    def observe_tile(self, source: str) -> None:
        with self._lock:
            self.tiles[source] += 1

    def observe_mllp(self, outcome: str) -> None:
        """Count one MLLP connection by outcome (``accepted``, ``refused``, ``tls_failed``)."""
        with self._lock:
            self.mllp[outcome] += 1

    def observe_ehr(self, outcome: str) -> None:
        """Count one EHR pull event (``page``, ``order_applied``, ``request_failed``...)."""
        with self._lock:
            self.ehr[outcome] += 1

    def observe_backup(self, ok: bool, at: float) -> None:
        """Record a scheduled backup: its time (UNIX seconds) when it succeeded, else a failure."""
        with self._lock:
            if ok:
                self.backup_last_success = max(self.backup_last_success, at)
            else:
                self.backup_failures += 1

    def render(self, extra: dict[str, float] | None = None) -> str:
        """Return the Prometheus exposition text."""
        lines = [
            "# HELP slideserver_requests_total HTTP requests by route template and status.",
            "# TYPE slideserver_requests_total counter",
        ]
        with self._lock:
            for (method, route, status), count in sorted(self.requests.items()):
                lines.append(
                    f'slideserver_requests_total{{method="{method}",route="{route}",'
                    f'status="{status}"}} {count}'
                )
            lines += [
                "# HELP slideserver_request_seconds_total Time spent answering, by route.",
                "# TYPE slideserver_request_seconds_total counter",
            ]
            for route, secs in sorted(self.seconds.items()):
                lines.append(f'slideserver_request_seconds_total{{route="{route}"}} {secs:.6f}')
            lines += [
                "# HELP slideserver_tiles_total Images served, by where they came from.",
                "# TYPE slideserver_tiles_total counter",
            ]
            for source, count in sorted(self.tiles.items()):
                lines.append(f'slideserver_tiles_total{{source="{source}"}} {count}')
            lines += [
                "# HELP slideserver_mllp_connections_total MLLP connections, by outcome.",
                "# TYPE slideserver_mllp_connections_total counter",
            ]
            for outcome, count in sorted(self.mllp.items()):
                lines.append(f'slideserver_mllp_connections_total{{outcome="{outcome}"}} {count}')
            lines += [
                "# HELP slideserver_ehr_pull_total EHR pull events, by outcome.",
                "# TYPE slideserver_ehr_pull_total counter",
            ]
            for outcome, count in sorted(self.ehr.items()):
                lines.append(f'slideserver_ehr_pull_total{{outcome="{outcome}"}} {count}')
            lines += [
                "# HELP slideserver_backup_last_success_timestamp When the last scheduled backup "
                "succeeded (UNIX time; 0: never).",
                "# TYPE slideserver_backup_last_success_timestamp gauge",
                f"slideserver_backup_last_success_timestamp {self.backup_last_success:.3f}",
                "# HELP slideserver_backup_failures_total Scheduled backups that failed.",
                "# TYPE slideserver_backup_failures_total counter",
                f"slideserver_backup_failures_total {self.backup_failures}",
            ]
        for name, value in sorted((extra or {}).items()):
            lines += [f"# TYPE {name} gauge", f"{name} {value}"]
        return "\n".join(lines) + "\n"
