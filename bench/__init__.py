"""cliffwatch benchmarks: ``python3 dev.py bench`` (or ``python -m bench``).

Each benchmark prints its figures and a ratio against a baseline measured in the same run
on the same machine, so a result reads the same on a fast or a slow box. Targets live here,
not in timed unit tests.
"""
