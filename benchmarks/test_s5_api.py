"""S5: the API's small GETs against a bare trio + h11 server, same run.

wrk (closed loop, 8 connections, 5 s) against `/ping`, `/v2/info` and
`/v2/apps` of an idle `marathon serve` with the built-in HTTP server, in
three rounds alternating with `benchmarks/apps/bare_h11.py` (one fixed
answer, nothing else: the stack's ceiling on this machine); the ratios are
medians of the per-round ratios.  Hypercorn is measured once, as a
yardstick.  Target: small
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
    bare = result["bare_h11"]
    # The default server's ratios are medians of per-round ratios (each
    # against the bare rate of its own round); hypercorn's are against the
    # median bare rate.
    ratios = {f"{key[: -len(' rounds')]}": result[key[: -len(" rounds")]]
              for key in result if key.endswith(" vs bare rounds")}
    ratios.update({f"{name} vs bare": round(rate / bare, 2) for name, rate in result.items()
                   if name.startswith("hypercorn ") and not name.endswith("rounds")})
    report("S5 small GETs", {**result, **ratios, "target": "small GETs >= 0.5 x bare trio+h11"})
