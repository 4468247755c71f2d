"""S5: the API's small GETs against a bare trio + h11 server, same run.

wrk (closed loop, 8 connections, 5 s) against `/ping`, `/v2/info` and
`/v2/apps` of an idle `marathon serve`, once with the built-in HTTP server
and once with hypercorn, and against `benchmarks/apps/bare_h11.py` (one fixed
answer, nothing else: the stack's ceiling on this machine).  Target: small
GETs >= 50% of the bare server's rate.  The other half of S5, /v2/apps p99
during S1, is reported by test_s1_burst.py.
"""

from __future__ import annotations

from pathlib import Path

from marathon.testing import scenarios

BARE = Path(__file__).parent / "apps" / "bare_h11.py"


def test_s5_small_gets_vs_bare_h11(benchmark, report, tmp_path):
    result = benchmark.pedantic(scenarios.s5_small_gets, args=(tmp_path,), kwargs={"bare_server": BARE},
                                rounds=1, iterations=1)
    bare = result["bare_h11"]["req_per_s"]
    ratios = {f"{name} vs bare": round(r["req_per_s"] / bare, 2) for name, r in result.items() if name != "bare_h11"}
    report("S5 small GETs", {**result, **ratios, "target": "small GETs >= 0.5 x bare trio+h11"})
