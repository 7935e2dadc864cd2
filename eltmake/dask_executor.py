"""Steps on a Dask cluster: the executor behind ``--executor dask`` and ``dask://HOST:PORT``.

eltmake stays the coordinator: the scheduler (:mod:`eltmake.scheduler`) decides what must run,
submits it in dependency order, holds the locks and writes records and history; this executor
only runs each submitted step as one Dask task (:func:`eltmake.dask_worker.run_step`) and hands
back how it ended. The decisions, and why, are in ``docs/dask.md``; in short:

* output: workers send batches of lines as worker events on a topic named after this client, so
  the scheduler drops them when the client goes; one pump thread here delivers them to the
  display in order, then the step's result (so a failure's last lines come before its verdict);
* cancellation: a Dask future's cancel does not stop a running task, so each run has a Dask
  ``Event``; setting it makes the task terminate its process groups (within a second);
* worker death: the scheduler's ``remove-worker`` event names the worker and the tasks it was
  running; those steps fail at once with one line naming it (and their events are set, so a
  retry the scheduler may start elsewhere ends before running anything); no record is written.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import threading
import time
import uuid
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import distributed

from eltmake.dask_worker import run_step, table_digests, target_digest
from eltmake.digest import digest
from eltmake.errors import Cancelled, ConfigError, EltmakeError, StepError
from eltmake.step import StepResult

if TYPE_CHECKING:
    from collections.abc import Callable

    from eltmake.executors import StepRun
    from eltmake.project import Project

CLOSE_WAIT_S = 10.0  # after a cancel, how long close() waits for the workers to confirm
CONNECT_TIMEOUT = "10s"


@dataclass
class _Remote:
    """One submitted run: the future the scheduler waits on, and the Dask one behind it."""

    run: StepRun
    key: str
    token: str
    future: Future
    dask: Any = None
    worker: str | None = None
    signalled: bool = False


class DaskExecutor:
    """Runs each step as a Dask task on a running scheduler (``address``) or on a local cluster
    started for the build (``address=None``): worker processes on this machine."""

    def __init__(
        self,
        project: Project,
        address: str | None,
        echo: Callable[[str], None],
        debug: bool = False,
    ):
        self.project = project
        self.address = address
        self.echo = echo
        self.debug = debug
        self.client: Any = None
        self.cluster: Any = None
        self._runs: dict[str, _Remote] = {}
        self._by_run: dict[int, str] = {}  # id(StepRun) -> token
        self._lock = threading.Lock()
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._pump: threading.Thread | None = None
        self._tables: dict[str, str] | None = None
        self._store = ""
        self._jobs = 0
        self._closed = False

    @property
    def where(self) -> str:
        return self.address or "the local Dask cluster"

    # --- the executor interface -----------------------------------------------------------------

    def open(self, jobs: int | None) -> int:
        """Connect to the scheduler (a wrong address fails here, before the build starts); return
        how many steps to run at once: ``-j``, else the cluster's threads. The local cluster is
        started at the first step instead: a build with nothing to run starts none."""
        if self._jobs:
            return self._jobs
        if not self.debug:  # every failure is reported in one line of ours; --debug shows theirs
            logging.getLogger("distributed").setLevel(logging.CRITICAL)
        if self.address is None:
            self._jobs = jobs or os.cpu_count() or 1
            return self._jobs
        self.client = self._connect(self.address)
        nthreads = self.client.nthreads()
        total = sum(nthreads.values())
        self.echo(
            f"executor: the Dask scheduler at {self.address} ({_n(len(nthreads), 'worker')}, "
            f"{_n(total, 'thread')})"
            + ("; it has no worker yet: steps wait until one joins" if not total else "")
        )
        self._listen()
        self._jobs = jobs or total or os.cpu_count() or 1
        return self._jobs

    def _start_local_cluster(self) -> None:
        """Worker processes on this machine, one per core up to ``-j``, threads for the rest."""
        workers = max(1, min(self._jobs, os.cpu_count() or 1))
        threads = math.ceil(self._jobs / workers)
        try:
            self.cluster = _local_cluster(
                n_workers=workers,
                threads_per_worker=threads,
                processes=True,
                host="127.0.0.1",
                dashboard_address=":0",  # a free port: never clash with another cluster
                silence_logs=logging.DEBUG if self.debug else logging.CRITICAL,
                preload=["eltmake.dask_worker"],  # its dask_setup: workers survive Ctrl-C
            )
            self.client = distributed.Client(self.cluster, set_as_default=False)
        except Exception as e:
            raise EltmakeError(
                f"could not start a local Dask cluster: {type(e).__name__}: {e}"
            ) from None
        self.echo(
            f"executor: a local Dask cluster of {_n(workers, 'worker process')} × "
            f"{_n(threads, 'thread')} ({self.cluster.scheduler_address})"
        )
        self._listen()

    def _listen(self) -> None:
        self.client.subscribe_topic(self.client.id, self._on_step_event)
        self.client.subscribe_topic("all", self._on_cluster_event)
        self._pump = threading.Thread(target=self._pump_loop, name="dask-events", daemon=True)
        self._pump.start()

    @staticmethod
    def _connect(address: str) -> Any:
        """A client of the scheduler; a refused connection (a typo, a scheduler not started) fails
        at once, before Dask's own connect would retry for its whole timeout."""
        import socket

        host, _, port = address.removeprefix("tcp://").rpartition(":")
        why = ""
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
        except OSError as e:
            why = e.strerror or str(e) or type(e).__name__
        if not why:
            try:
                return distributed.Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
            except Exception as e:
                why = f"{type(e).__name__}: {e}"
        raise ConfigError(
            f"cannot reach the Dask scheduler at {address} ({why}); is `dask scheduler` running "
            "there, and is the address right?"
        )

    def start(self, jobs: int) -> None:
        self.open(jobs)

    def submit(self, run: StepRun) -> Future:
        assert self._jobs, "open() first"
        if self.client is None:
            self._start_local_cluster()
        token = uuid.uuid4().hex[:12]
        name = run.step.name
        if self._tables is None:
            from eltmake.store import store_url

            self._tables = table_digests(self.project)
            self._store = digest(store_url(self.project) or "")
        from eltmake import __version__

        spec = {
            "version": __version__,
            "token": token,
            "topic": self.client.id,
            "cancel": _cancel_name(token),
            "root": str(self.project.root),
            "env": self.project.env_name,
            "target": name,
            "key": run.key,
            "record": run.record,
            "full_refresh": run.full_refresh,
            "run_id": run.run_id,
            "changed_inputs": run.changed_inputs,
            "digests": {**self._tables, f"targets.{name}": target_digest(self.project, name)},
            "locks": list(run.step.locks),
            "store": self._store,  # a digest: workers must resolve the same store themselves
            "read_only": bool(getattr(run.state, "read_only", False)),
            "warm": run.warm,
            "debug": self.debug,
        }
        future: Future = Future()
        future.set_running_or_notify_cancel()
        rem = _Remote(run, f"eltmake-{name}-{token}", token, future)
        with self._lock:
            self._runs[token] = rem
            self._by_run[id(run)] = token
        rem.dask = self.client.submit(run_step, spec, key=rem.key, pure=False, retries=0)
        rem.dask.add_done_callback(lambda _f: self._q.put(("done", token)))
        return future

    def cancel(self, run: StepRun, grace: float) -> None:
        run.cancelled.set()
        with self._lock:
            rem = self._runs.get(self._by_run.get(id(run), ""))
        if rem is not None:
            self._signal(rem)

    def cancel_all(self, grace: float) -> None:
        with self._lock:
            runs = [r for r in self._runs.values() if not r.future.done()]
        for rem in runs:
            rem.run.cancelled.set()
            self._signal(rem)

    def close(self) -> None:
        """Wait for cancelled steps to confirm they stopped (bounded), then disconnect (and stop
        the local cluster). A step still running here was not cancelled: cancel it first."""
        if self._closed:
            return
        self._closed = True
        if self.client is None:
            return
        self.cancel_all(grace=1.0)
        deadline = time.monotonic() + CLOSE_WAIT_S
        for rem in list(self._runs.values()):
            with contextlib.suppress(Exception):  # a timeout: settled below
                rem.future.exception(timeout=max(0.0, deadline - time.monotonic()))
        for rem in list(self._runs.values()):
            if _settle(rem.future, exc=Cancelled(f"{self._on(rem)} did not confirm the stop")):
                with contextlib.suppress(Exception):
                    rem.dask.cancel()
        self._q.put(None)
        if self._pump is not None:
            self._pump.join(timeout=5)
        with contextlib.suppress(Exception):
            self.client.unsubscribe_topic(self.client.id)
            self.client.unsubscribe_topic("all")
        with contextlib.suppress(Exception):
            self.client.close(timeout=5)
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close(timeout=10)

    # --- events from the cluster: handled in order, on the pump thread ----------------------------

    def _on_step_event(self, event: tuple[float, Any]) -> None:
        """On the client's event loop: only queue (the display may block; the loop must not)."""
        msg = event[1]
        if isinstance(msg, dict) and "eltmake" in msg:
            self._q.put(("step", msg))

    def _on_cluster_event(self, event: tuple[float, Any]) -> None:
        msg = event[1]
        if isinstance(msg, dict) and msg.get("action") == "remove-worker":
            self._q.put(("lost", msg.get("worker"), set(msg.get("processing-tasks") or ())))

    def _pump_loop(self) -> None:
        while (item := self._q.get()) is not None:
            try:
                getattr(self, f"_handle_{item[0]}")(*item[1:])
            except Exception as e:  # a bug here must not leave the build waiting forever
                self.echo(f"eltmake: internal error in the Dask executor: {type(e).__name__}: {e}")

    def _handle_step(self, msg: dict[str, Any]) -> None:
        rem = self._runs.get(msg["eltmake"])
        if rem is None or rem.future.done():
            return
        rem.worker = rem.worker or msg.get("worker")
        for line in msg.get("lines", ()):
            rem.run.log(line)
        if msg.get("progress") is not None:
            rem.run.progress(msg["progress"])
        if "result" in msg:  # the task has ended its step: its processes, locks and store
            _settle(rem.future, *self._outcome(rem, msg["result"]))

    def _handle_done(self, token: str) -> None:
        rem = self._runs.get(token)
        if rem is None:
            return
        try:
            if not rem.future.done():
                try:
                    value = rem.dask.result()
                except BaseException as e:
                    _settle(rem.future, exc=self._dask_error(rem, e))
                else:
                    _settle(rem.future, *self._outcome(rem, value))
        finally:
            self._forget(rem, clear=rem.signalled)

    def _handle_lost(self, worker: str | None, keys: set[str]) -> None:
        for rem in [r for r in list(self._runs.values()) if r.key in keys]:
            if rem.future.done():  # its step had ended: the worker died on the way out
                self._forget(rem, clear=False)
                continue
            self._signal(rem)  # a retry the scheduler starts elsewhere ends before it runs
            with contextlib.suppress(Exception):
                rem.dask.cancel()
            name = rem.run.step.name
            if rem.run.cancelled.is_set():
                _settle(rem.future, exc=Cancelled("cancelled"))
            else:
                _settle(
                    rem.future,
                    exc=StepError(
                        f"{name}: Dask worker {worker} died while running this step; nothing was "
                        "recorded, so the next build runs it again"
                    ),
                )
            self._forget(rem, clear=False)  # the event stays set: it stops a late retry

    # --- helpers ---------------------------------------------------------------------------------

    def _signal(self, rem: _Remote) -> None:
        if rem.signalled:
            return
        rem.signalled = True
        with contextlib.suppress(Exception):  # the scheduler is gone: the future says so
            distributed.Event(_cancel_name(rem.token), client=self.client).set()

    def _forget(self, rem: _Remote, clear: bool) -> None:
        with self._lock:
            self._runs.pop(rem.token, None)
            self._by_run.pop(id(rem.run), None)
        if clear:  # the task has ended: the scheduler need not keep its event
            with contextlib.suppress(Exception):
                distributed.Event(_cancel_name(rem.token), client=self.client).clear()
        rem.dask = None  # releases the Dask future: the scheduler forgets the task

    def _on(self, rem: _Remote) -> str:
        return f"Dask worker {rem.worker}" if rem.worker else self.where

    def _outcome(self, rem: _Remote, value: dict[str, Any]) -> tuple[Any, BaseException | None]:
        """The task's answer as the recipe's own result or error."""
        if value.get("ok"):
            return StepResult(value["fingerprint"], value["stats"], value["message"]), None
        kind, message, tail = value["kind"], value["message"], value.get("tail") or []
        if kind == "cancelled":
            return None, Cancelled(message)
        if kind == "config":
            return None, ConfigError(message)
        if kind == "internal":
            step = rem.run.step
            message = f"{step.name}: internal error in the {step.kind} recipe on {self._on(rem)}: {message}"
        return None, StepError(message, tail)

    def _dask_error(self, rem: _Remote, e: BaseException) -> BaseException:
        """What went wrong around the task (not in the step), in one line naming where."""
        name = rem.run.step.name
        if isinstance(e, distributed.KilledWorker):
            worker = getattr(getattr(e, "last_worker", None), "address", None) or rem.worker
            return StepError(
                f"{name}: Dask worker {worker} died while running this step; nothing was "
                "recorded, so the next build runs it again"
            )
        if rem.run.cancelled.is_set():
            return Cancelled("cancelled")
        if isinstance(e, CancelledError | OSError) or "CommClosed" in type(e).__name__:
            return StepError(f"{name}: lost the Dask scheduler at {self.where} while the step ran")
        if isinstance(e, ImportError):
            return StepError(
                f"{name}: {self._on(rem)} cannot run eltmake steps ({e}); install eltmake, the "
                "same version with the same plugins, on every worker"
            )
        return StepError(
            f"{name}: the Dask task failed on {self._on(rem)}: {type(e).__name__}: {e}"
        )


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "es" if noun.endswith("s") else "s")


def _cancel_name(token: str) -> str:
    return f"eltmake-cancel-{token}"


def _settle(future: Future, result: Any = None, exc: BaseException | None = None) -> bool:
    """Complete ``future`` unless something already did (a lost worker, close()); True if so."""
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
    except Exception:  # InvalidStateError: already settled
        return False
    return True


def _local_cluster(**kwargs: Any) -> Any:
    """A LocalCluster whose scheduler fails a task whose worker died instead of running it
    again elsewhere: a half-done extract-load must not silently start over."""
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        return distributed.LocalCluster(**kwargs)
