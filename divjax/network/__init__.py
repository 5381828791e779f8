"""The simulated clock and network: when nodes compute, when messages leave and arrive.

`links` (upload links, latency, loss, message timing, ring sizing), `messages` (the ring buffer
of messages in flight and its counters), `downloads` (download links), `topology` (neighbour
graphs), `compute_schedule` (compute times, jitter, churn), `traces` and `trace_checks`
(per-node traces over time), `pair_files` (the CSV readers of the per-pair files).
"""
