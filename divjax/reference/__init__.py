"""The reference simulators: slow, obviously-correct event loops the tests compare the engine to.

`divshare` (DivShare, one event at a time, and the helpers the others share), `baselines`
(Swift, AD-PSGD, D-PSGD, Epidemic Learning, local-only), `dpsgd` (an independent D-PSGD
timed from seconds and bytes/s), `links` (their links, read from the raw inputs). Only the
tests import them.
"""
