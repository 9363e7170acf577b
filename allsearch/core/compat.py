"""What allsearch needs from a library that its public API does not quite offer: one place,
each piece with a test that fails when the library changes it (tests/test_coordination.py,
test_compat_*). Everything else uses public APIs only (docs/design.md, "Rules").
"""

from __future__ import annotations

import optuna

__all__ = ["cached_storage"]


def cached_storage(storage: optuna.storages.RDBStorage) -> optuna.storages.BaseStorage:
    """Optuna's in-process cache in front of a database storage (finished trials are read
    once), for the gRPC proxy: `run_grpc_proxy_server`'s documentation asks for
    `optuna.storages.get_storage` there, which Optuna otherwise calls "only for internal
    usage". Writes go through to `storage` (the proxy's heartbeat calls among them)."""
    return optuna.storages.get_storage(storage)
