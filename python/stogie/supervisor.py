"""Worker processes for `stogie --workers N`: bind once, fork workers, keep them running.

The supervisor (the process started by the `stogie` command) binds the listening socket with the
server's own binding rules, then forks N workers. Each worker receives the socket as fd 3 through
systemd-style socket activation (`LISTEN_FDS=1`, `LISTEN_PID=<its pid>`), imports the application
(afresh: the supervisor never imports it), prepares a `wsgi.Server` and tells the supervisor it is
ready through a pipe, on which it also reports its engine stats every second.

The supervisor is one thread with one selector loop (it forks at any time, so it starts no
threads): signals arrive through `signal.set_wakeup_fd`, worker messages through the pipes, and
the metrics endpoint (`--metrics-bind`) is served from the same loop.

* A worker that dies is replaced, with exponential back-off while workers keep dying early.
* SIGTERM/SIGINT: every worker stops gracefully (`server.stop()`: no new connections, requests in
  progress get `shutdown_timeout` seconds), then the supervisor exits. A second SIGINT kills.
* SIGHUP: a new generation of workers is started; once all of them are ready, the old ones stop
  gracefully. If the new application fails to import, the old workers keep serving.
* `--max-requests N`: a worker that has received N requests asks to be replaced; the supervisor
  starts its replacement and stops it gracefully once the replacement is ready.
* SIGUSR1 is passed on to the workers, which reopen their access log.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from contextlib import suppress
from typing import Any

from stogie import __version__, _process, metrics, server
from stogie._systemd import Notifier
from stogie._systemd import forget as forget_systemd_notify

logger = logging.getLogger("stogie.supervisor")

LISTEN_FD = 3
#: A worker that dies sooner than this after starting counts as a failure for the back-off.
EARLY_DEATH = 5.0
MAX_BACKOFF = 30.0
#: Seconds on top of `shutdown_timeout` before a stopping worker is killed.
KILL_GRACE = 5.0
STATS_INTERVAL = 1.0
POLL_INTERVAL = 0.1
EXIT_LOAD_ERROR = 2

_HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD,
                    signal.SIGUSR1)


class Worker:
    """The supervisor's view of one worker process."""

    def __init__(self, pid: int, generation: int, fd: int) -> None:
        self.pid = pid
        self.generation = generation
        self.fd = fd                          # read end of the worker's status pipe
        self.buffer = b""
        self.started = time.monotonic()
        self.ready = False
        self.retiring = False                 # asked for a replacement (--max-requests)
        self.stopping = False                 # SIGTERM sent
        self.kill_at: float | None = None
        self.error: str | None = None         # application load error it reported
        self.stats: dict[str, int] = {}


def _backoff(failures: int) -> float:
    """No delay for the first failure, then 0.25 s doubling up to MAX_BACKOFF."""
    if failures <= 1:
        return 0.0
    return min(0.25 * 2 ** (failures - 2), MAX_BACKOFF)


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exit status {os.WEXITSTATUS(status)}"


class Supervisor:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.num_workers: int = args.workers or 1
        self.shutdown_timeout = float(args.shutdown_timeout if args.shutdown_timeout is not None
                                      else server.HTTPServer.shutdown_timeout)
        self.workers: dict[int, Worker] = {}
        self.generation = 1
        self.good_generation = 0              # last generation that had all workers ready
        self.failures = 0
        self.next_spawn = 0.0
        self.restarts = 0
        self.finished: dict[str, int] = {}    # counter totals of workers that exited
        self.stopping = False
        self.exit_status = 0
        self.listener: socket.socket | None = None
        self.bind_addr: Any = None
        self.selector: selectors.BaseSelector | None = None
        self.metrics: metrics.MetricsEndpoint | None = None
        self.pidfile = _process.PidFile(args.pid)
        self.notifier = Notifier()
        self.watcher: subprocess.Popen[bytes] | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._parent_pid = os.getpid()

    # -- setup --------------------------------------------------------------------------------

    def bind(self) -> None:
        """Binds with the server's own rules (incl. systemd socket activation)."""
        args = self.args
        try:
            server.thread_limits(10 if args.threads is None else args.threads,
                                 -1 if args.max_threads is None else args.max_threads)
        except (TypeError, ValueError) as exc:
            raise _process.UsageError(str(exc)) from None
        inherited = _process.inherited_socket_address()
        backlog = args.request_queue_size
        if backlog is None:
            backlog = server.HTTPServer.request_queue_size
        try:
            self.listener = server.listening_socket(args.bind_addr, backlog)
        except OSError as exc:
            raise _process.UsageError(
                f"cannot listen on {args.bind}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise _process.UsageError(str(exc)) from None
        self.bind_addr = _process.socket_address(self.listener)
        if inherited is not None:
            logger.info("using the socket passed by systemd (fd %d)", LISTEN_FD)
        if args.metrics_addr is not None:
            try:
                sock = metrics.bind_socket(args.metrics_addr)
            except OSError as exc:
                raise _process.UsageError(f"cannot listen on --metrics-bind {args.metrics_bind}: "
                                     f"{exc.strerror or exc}") from None
            self.metrics = metrics.MetricsEndpoint(sock, self.render_metrics)

    def run(self) -> int:
        self.bind()
        try:
            self.selector = selectors.DefaultSelector()
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self.selector.register(self._wake_r, selectors.EVENT_READ, self._on_wakeup)
            for signum in _HANDLED_SIGNALS:
                signal.signal(signum, _record_signal)
            signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
            if self.metrics is not None:
                self.metrics.register(self.selector)
            self.pidfile.write()
            if self.args.credentials is not None:     # after binding and the pid file
                _process.drop_privileges(self.args.credentials)
            if self.args.reload:
                self.start_watcher()
            self.loop()
        finally:
            self.cleanup()
        return self.exit_status

    def cleanup(self) -> None:
        for w in list(self.workers.values()):      # only after an unexpected error
            with suppress(OSError):
                os.kill(w.pid, signal.SIGKILL)
            with suppress(OSError):
                os.waitpid(w.pid, 0)
        if self.watcher is not None:
            self.watcher.terminate()
            with suppress(subprocess.TimeoutExpired):
                self.watcher.wait(timeout=5)
        signal.set_wakeup_fd(-1)
        for signum in _HANDLED_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        if self.metrics is not None:
            self.metrics.close()
        if self.selector is not None:
            self.selector.close()
        for sock in (self._wake_r, self._wake_w, self.listener):
            if sock is not None:
                sock.close()
        self.pidfile.remove()

    # -- the loop -----------------------------------------------------------------------------

    def loop(self) -> None:
        assert self.selector is not None
        self.reconcile()
        while self.workers or not self.stopping:
            self.notifier.ping_if_due()
            for key, _ in self.selector.select(self._timeout()):
                key.data()
            self.reap()
            self.enforce_deadlines()
            if self.metrics is not None:
                self.metrics.expire()
            self.reconcile()

    def start_watcher(self) -> None:
        """`--reload`: a watcher process sends SIGHUP when a watched file changes."""
        args = self.args
        if self.num_workers > 1:
            logger.warning("--reload with --workers %d: every change restarts all %d workers",
                           self.num_workers, self.num_workers)
        command = [sys.executable, "-m", "stogie._reload", str(os.getpid())]
        for directory in args.reload_dir or [os.getcwd()]:
            command += ["--dir", os.path.abspath(directory)]
        for pattern in args.reload_include or []:
            command += ["--include", pattern]
        self.watcher = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        logger.info("reloading on changes to %s in %s",
                    ", ".join(args.reload_include or ["*.py"]),
                    ", ".join(args.reload_dir or [os.getcwd()]))

    def _timeout(self) -> float:
        now = time.monotonic()
        deadlines = [w.kill_at for w in self.workers.values() if w.kill_at is not None]
        if not self.stopping and self._missing() > 0:
            deadlines.append(self.next_spawn)
        if self.notifier.watchdog_interval is not None:
            deadlines.append(now + self.notifier.watchdog_interval)
        soonest = min(deadlines, default=now + 1.0)
        return max(0.0, min(soonest - now, 1.0))

    def _on_wakeup(self) -> None:
        assert self._wake_r is not None
        try:
            data = self._wake_r.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        for signum in data:
            self.on_signal(signum)

    def on_signal(self, signum: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            name = signal.Signals(signum).name
            if self.stopping:
                if signum == signal.SIGINT:                   # Ctrl-C twice: do not wait
                    logger.warning("SIGINT again: killing the workers")
                    for w in self.workers.values():
                        self._kill(w, signal.SIGKILL)
                return
            logger.info("%s: stopping the workers gracefully (requests in progress get %gs)",
                        name, self.shutdown_timeout)
            self.stopping = True
            self.notifier.stopping()
            # Stop listening now (the workers close their copies as they stop): new clients
            # are refused instead of queued behind a socket nobody will accept from.
            if self.listener is not None:
                self.listener.close()
                self.listener = None
            for w in self.workers.values():
                self.terminate(w)
        elif signum == signal.SIGUSR1:
            logger.info("SIGUSR1: workers reopen the access log")
            for w in self.workers.values():
                if w.ready and not w.stopping:
                    self._kill(w, signal.SIGUSR1)
        elif signum == signal.SIGHUP and not self.stopping:
            self.notifier.reloading()
            self.generation += 1
            logger.info("SIGHUP: reloading: starting %d new worker%s", self.num_workers,
                        "" if self.num_workers == 1 else "s")
            self.next_spawn = 0.0

    # -- workers ------------------------------------------------------------------------------

    def _current(self) -> list[Worker]:
        return [w for w in self.workers.values()
                if w.generation == self.generation and not w.retiring and not w.stopping]

    def _missing(self) -> int:
        return self.num_workers - len(self._current())

    def reconcile(self) -> None:
        """Starts missing workers; stops old and retiring ones once replacements are ready."""
        if self.stopping:
            return
        now = time.monotonic()
        missing = self._missing()
        if missing > 0 and now >= self.next_spawn:
            try:
                for _ in range(missing):
                    self.spawn()
            except OSError as exc:
                logger.error("cannot start a worker: %s; retrying in 1s", exc)
                self.next_spawn = now + 1.0
        current = self._current()
        if len(current) >= self.num_workers and all(w.ready for w in current):
            for w in list(self.workers.values()):
                if w not in current and not w.stopping:
                    self.terminate(w)
            if self.good_generation != self.generation:
                if self.good_generation:
                    logger.info("reload complete: generation %d serving", self.generation)
                else:
                    self._log_serving()
                self.notifier.ready(f"serving with {self.num_workers} workers, generation "
                                    f"{self.generation}")
                self.good_generation = self.generation

    def _log_serving(self) -> None:
        logger.info("stogie %s serving %s on %s with %d worker%s (supervisor pid %d)",
                    __version__, self.args.app, _process.describe_bind(self.bind_addr),
                    self.num_workers, "" if self.num_workers == 1 else "s", os.getpid())
        if self.metrics is not None:
            logger.info("metrics on %s/metrics",
                        _process.describe_bind(_process.socket_address(self.metrics.sock)))

    def terminate(self, w: Worker) -> None:
        """Graceful stop: the worker's `server.stop()` runs on SIGTERM."""
        if w.stopping:
            return
        w.stopping = True
        w.kill_at = time.monotonic() + self.shutdown_timeout + KILL_GRACE
        self._kill(w, signal.SIGTERM)

    def _kill(self, w: Worker, sig: int) -> None:
        with suppress(ProcessLookupError):
            os.kill(w.pid, sig)

    def enforce_deadlines(self) -> None:
        now = time.monotonic()
        for w in self.workers.values():
            if w.kill_at is not None and now >= w.kill_at:
                logger.warning("worker %d did not stop in time: killing it", w.pid)
                self._kill(w, signal.SIGKILL)
                w.kill_at = None

    def spawn(self) -> None:
        assert self.selector is not None and self.listener is not None
        sys.stdout.flush()                    # or the worker would write it out once more
        sys.stderr.flush()
        r, wfd = os.pipe()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED_SIGNALS)
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            os.close(r)
            os.close(wfd)
            raise
        if pid == 0:                                      # the worker
            status = 1
            try:
                os.close(r)
                self._forget_parent_state()
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
                status = run_worker(self.args, wfd, self.bind_addr, self._parent_pid)
            except BaseException:  # noqa: BLE001 - nothing may escape into the parent's code
                with suppress(BaseException):
                    traceback.print_exc()
            finally:
                with suppress(BaseException):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(status)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(wfd)
        os.set_blocking(r, False)
        w = Worker(pid, self.generation, r)
        self.workers[pid] = w
        self.selector.register(r, selectors.EVENT_READ, lambda: self._on_message(w))
        logger.debug("started worker %d (generation %d)", pid, w.generation)

    def _forget_parent_state(self) -> None:
        """In a new worker: drop the supervisor's signal setup and descriptors; fd 3 = socket."""
        if self.watcher is not None:
            self.watcher.terminate()
            with suppress(subprocess.TimeoutExpired):
                self.watcher.wait(timeout=5)
        signal.set_wakeup_fd(-1)
        for signum in _HANDLED_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)   # until the access log is open
        for w in self.workers.values():
            with suppress(OSError):
                os.close(w.fd)
        if self.metrics is not None:
            self.metrics.sock.close()
            for conn in list(self.metrics._clients):
                conn.close()
        if self.selector is not None:
            self.selector.close()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        assert self.listener is not None
        fd = self.listener.fileno()
        if fd != LISTEN_FD:
            os.dup2(fd, LISTEN_FD, inheritable=False)
            self.listener.close()
        else:
            self.listener.detach()                        # fd 3 now belongs to the server

    def _on_message(self, w: Worker) -> bool:
        """Reads what the worker sent; False when there is nothing more to read now."""
        if w.fd < 0:
            return False
        try:
            data = os.read(w.fd, 65536)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if not data:
            self._close_pipe(w)
            return False
        w.buffer += data
        *lines, w.buffer = w.buffer.split(b"\n")
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            self.handle_message(w, message)
        return True

    def _close_pipe(self, w: Worker) -> None:
        if w.fd < 0:
            return
        assert self.selector is not None
        with suppress(KeyError, ValueError):
            self.selector.unregister(w.fd)
        os.close(w.fd)
        w.fd = -1

    def handle_message(self, w: Worker, message: dict) -> None:
        if "stats" in message:
            w.stats = {k: int(v) for k, v in message["stats"].items()}
        if message.get("ready"):
            w.ready = True
            logger.log(logging.INFO if self.good_generation else logging.DEBUG,
                       "worker %d ready", w.pid)
        if message.get("retire") and not w.retiring and not w.stopping:
            w.retiring = True
            logger.info("worker %d reached --max-requests %d: replacing it", w.pid,
                        self.args.max_requests)
        if "error" in message:
            w.error = str(message["error"])

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            w = self.workers.pop(pid, None)
            if w is None:
                if self.watcher is not None and pid == self.watcher.pid and not self.stopping:
                    logger.warning("the --reload watcher exited (%s): changes are no longer "
                                   "watched", _describe_status(status))
                    self.watcher.returncode = status
                continue
            while self._on_message(w):               # its last words: final stats, an error
                pass
            self._close_pipe(w)
            for key in (*(k for k, _, _ in metrics.COUNTERS), *metrics.LATENCY_KEYS):
                self.finished[key] = self.finished.get(key, 0) + w.stats.get(key, 0)
            self.exited(w, status)

    def exited(self, w: Worker, status: int) -> None:
        how = _describe_status(status)
        if w.stopping or self.stopping:
            logger.log(logging.DEBUG if self.exit_status else logging.INFO,
                       "worker %d stopped (%s)", w.pid, how)
            return
        now = time.monotonic()
        load_error = w.error is not None and os.WIFEXITED(status) \
            and os.WEXITSTATUS(status) == EXIT_LOAD_ERROR
        if load_error and not self.good_generation:
            # The application cannot be loaded at all: one line, status 2, like one process.
            print(f"stogie: error: {w.error}", file=sys.stderr, flush=True)
            self.exit_status = 2
            self.stopping = True
            for other in self.workers.values():
                self.terminate(other)
            return
        if load_error and w.generation > self.good_generation and any(
                o.generation == self.good_generation and o.ready and not o.stopping
                for o in self.workers.values()):
            logger.error("reload failed: %s; still serving the previous application", w.error)
            self.generation = self.good_generation
            self.notifier.ready(f"reload failed; serving generation {self.generation}")
            return
        early = not w.ready or now - w.started < EARLY_DEATH
        self.failures = self.failures + 1 if early else 0
        delay = _backoff(self.failures)
        self.next_spawn = now + delay
        self.restarts += 1
        reason = f": {w.error}" if w.error else ""
        if w.retiring:
            logger.warning("worker %d exited (%s)%s", w.pid, how, reason)
        else:
            logger.warning("worker %d died (%s)%s; restarting it%s", w.pid, how, reason,
                           f" in {delay:g}s" if delay else "")

    # -- metrics ------------------------------------------------------------------------------

    def render_metrics(self) -> str:
        live = [(w.pid, w.stats) for w in self.workers.values() if w.stats]
        return metrics.render(live, self.finished, extra=[
            ("workers", "gauge", "Running worker processes.", len(self.workers)),
            ("worker_restarts_total", "counter", "Workers that died and were replaced.",
             self.restarts),
        ])


def _record_signal(signum: int, frame: Any) -> None:
    """The handler: the signal number reaches the loop through the wakeup fd."""


# -- the worker process -----------------------------------------------------------------------


class _Channel:
    """The worker's end of its status pipe: one JSON object per line."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()
        self.broken = False

    def send(self, **message: Any) -> None:
        data = (json.dumps(message) + "\n").encode()
        with self.lock:
            if self.broken:
                return
            try:
                os.write(self.fd, data)
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.EBADF):
                    raise
                self.broken = True


def _engine_stats(srv: Any) -> dict[str, int]:
    engine = getattr(srv, "_engine", None)
    if engine is None:
        return {}
    return {k: int(v) for k, v in engine.stats().items() if k in metrics.STAT_KEYS}


def _report(srv: Any, channel: _Channel, stopper: _process.GracefulStop, max_requests: int | None,
            parent_pid: int, done: threading.Event) -> None:
    """Worker thread: stats every second, the --max-requests check, supervisor liveness."""
    retire_sent = False
    next_stats = 0.0
    while not done.wait(POLL_INTERVAL):
        stats = _engine_stats(srv)
        now = time.monotonic()
        if now >= next_stats:
            channel.send(stats=stats)
            next_stats = now + STATS_INTERVAL
        if max_requests and not retire_sent and stats.get("requests", 0) >= max_requests:
            channel.send(retire=True, stats=stats)
            retire_sent = True
        if os.getppid() != parent_pid or channel.broken:
            logger.warning("the supervisor is gone: stopping")
            stopper.request()
            return


def _max_requests(args: argparse.Namespace) -> int | None:
    """This worker's --max-requests, with its random share of --max-requests-jitter."""
    if args.max_requests is None:
        return None
    return args.max_requests + random.randint(0, args.max_requests_jitter or 0)


def run_worker(args: argparse.Namespace, status_fd: int, bind_addr: Any,
               parent_pid: int) -> int:
    """A worker process: import the application, serve on fd 3 until told to stop."""
    channel = _Channel(status_fd)
    forget_systemd_notify()
    os.environ["LISTEN_FDS"] = "1"
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.environ.pop("LISTEN_FDNAMES", None)
    try:
        app = _process.load_app(args.app, args.factory)
        srv = _process.make_server(args, app, bind_addr=bind_addr, multiprocess=True)
    except _process.UsageError as exc:
        channel.send(error=str(exc))
        return EXIT_LOAD_ERROR
    stopper = _process.GracefulStop(srv, log_level=logging.DEBUG)
    stopper.install()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)     # reloading is the supervisor's business
    try:
        _process.prepare(srv, args)
    except _process.UsageError as exc:
        channel.send(error=str(exc))
        return EXIT_LOAD_ERROR
    signal.signal(signal.SIGUSR1, _process.reopen_handler(srv))
    for name in ("LISTEN_FDS", "LISTEN_PID"):
        os.environ.pop(name, None)
    channel.send(ready=True, stats=_engine_stats(srv))
    done = threading.Event()
    reporter = threading.Thread(target=_report, name="stogie-report", daemon=True,
                                args=(srv, channel, stopper, _max_requests(args), parent_pid,
                                      done))
    reporter.start()
    stopper.serving()
    try:
        srv.serve()
    except KeyboardInterrupt:
        pass
    finally:
        stopper.join()
        srv.stop()
        done.set()
        reporter.join(timeout=2)
        channel.send(stats=_engine_stats(srv))
    return 0
