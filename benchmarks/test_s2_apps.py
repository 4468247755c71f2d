"""S2: 1,000 apps by 32 concurrent POSTs, then 10,000 apps in one group POST.

Each app is one instance on 2,000 simulated agents.  Clock windows: *running*
(every app counts its instance running, from the first POST) and per-app
*e2e* deployment time (POST to the deployment gone from /v2/deployments,
watched every 20 ms).  Targets: 1,000 apps running <= 10 s with per-app
deployment p99 < 1 s; the 10,000-app group running <= 20 s.
"""

from __future__ import annotations

import os

from marathon.testing import scenarios

APPS = int(os.environ.get("S2_APPS", "1000"))
GROUP_APPS = int(os.environ.get("S2_GROUP_APPS", "10000"))


def test_s2_many_apps(benchmark, report, tmp_path):
    result = benchmark.pedantic(
        scenarios.s2, args=(tmp_path,), kwargs={"apps": APPS, "group_apps": GROUP_APPS}, rounds=1, iterations=1
    )
    report("S2 apps", {
        **result,
        "targets": "1000 apps running<=10s, deployment p99<1000ms; 10000-app group running<=20s",
        "anchors": "Marathon 1.4: 1,000-app group 72 s; 500 POSTs 275 s",
    })
