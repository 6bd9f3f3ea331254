"""Paddle 3 PIR programs written as legacy ProgramDesc programs (what Paddle Lite's `opt` reads).

`rules.py` (pure data) says how each PIR operation is written; `translate.py` and `worker.py` run in
a child process (they import paddle); converters/passes/pir_to_legacy.py is the pass that calls them.
"""
