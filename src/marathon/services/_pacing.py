"""How often a loop over a whole batch gives the event loop a turn.

The tracker, the scheduler, the status pump, the launch queue and the event
bus all walk batches of up to 100,000 items on the trio thread.  Every
`YIELD_EVERY` items they `await trio.lowlevel.checkpoint()`, so an API
request waits for a few milliseconds of batch work, never for a whole batch
(S1: /v2/apps p99 1.1 s -> 0.32 s).
"""

YIELD_EVERY = 500
