"""Model workers: a model run in a child process, possibly under another interpreter or an emulator.

`client.WorkerProcess` is the parent's side; `protocol.py` is shared with the worker scripts beside
it, which are started by path so that they need nothing but numpy and their own library.
"""
