from __future__ import annotations

import threading
from collections.abc import Callable

from django_thread._connections import read_settings, thread_begins, thread_ends

_NOTHING = object()


class Thread(threading.Thread):
    """A :class:`threading.Thread` that looks after its own database connections.

    Same constructor, methods and behaviour as :class:`threading.Thread`; subclass
    it and override :meth:`~threading.Thread.run`, or pass *target*, exactly as with
    the stdlib. When the thread is started with :meth:`start`, its ``run()`` is the
    thread's whole life, not one unit of work:

    - before it there is nothing to do: a thread that has just started has no
      connection yet, and so no query log to reset;
    - after it, also when it raised, **every** connection the thread opened is
      closed, whatever ``CONN_MAX_AGE`` says, so that once
      :meth:`~threading.Thread.join` returns
      the database server no longer sees them. A transaction left open is rolled
      back, with an ERROR on the ``django_thread`` logger.

    Nothing is tidied in between: a long-running loop inside ``run()`` marks each
    pass with :func:`~django_thread.unit_of_work`.

    Calling ``run()`` directly runs it in the caller, like the stdlib does, and
    manages nothing of the caller's connections, also while the thread runs.
    """

    def start(self) -> None:
        """Start the thread, as :meth:`threading.Thread.start` does.

        Its ``run()`` then runs in the new thread, which closes its connections when
        ``run()`` ends. Nothing is done to the calling thread's connections.
        """
        # start() runs in the caller's thread: it must not touch the caller's
        # connections (closing one inside atomic() silently loses the caller's
        # transaction). All cleanup happens in the new thread, around run().
        try:
            fresh = self.ident is None
        except (AssertionError, AttributeError):
            # Thread.__init__() was not called; the stdlib's start() says so.
            fresh = False
        if not fresh:  # already started: the stdlib raises its own RuntimeError
            super().start()
            return
        read_settings()  # a bad DJANGO_THREAD is an error here, not in the thread

        # There is no public hook around run() in the new thread. The stdlib's
        # bootstrap looks self.run up when the thread begins, so an instance
        # attribute shadows the method just for this run, whether a subclass
        # overrides run() or passes target=. run() itself stays untouched, which
        # keeps a direct call to it unmanaged.
        own_run = vars(self).get("run", _NOTHING)
        wrapper = vars(self)["run"] = _RunAsUnit(self, self.run, own_run)
        try:
            super().start()
        except BaseException:
            self._restore_run(wrapper, own_run)
            raise

    def _restore_run(self, wrapper: object, own_run: object) -> None:
        # Only ever remove our own wrapper: a concurrent (refused) start() must not
        # leave another's behind.
        if vars(self).get("run") is not wrapper:
            return
        if own_run is _NOTHING:
            del vars(self)["run"]
        else:
            vars(self)["run"] = own_run


class _RunAsUnit:
    """The ``run`` one :meth:`Thread.start` installs: the thread's run() as its life.

    A small object rather than a closure: a closure that names itself (to restore
    ``run`` afterwards) is a reference cycle holding the whole Thread until the
    collector runs, which made every short thread pay for garbage collection.
    """

    __slots__ = ("own_run", "run", "thread")

    def __init__(self, thread: Thread, run: Callable[[], object], own_run: object) -> None:
        self.thread = thread
        self.run = run
        self.own_run = own_run

    def __call__(self) -> None:
        thread = self.thread
        if threading.get_ident() != thread.ident:
            # t.run() called directly, from another thread, while t runs: that call
            # runs in its caller like the stdlib's, and manages nothing.
            self.run()
            return
        # Nothing to do before run(): a thread that has just started has no connection
        # to tidy or query log to reset.
        shared = thread_begins(thread)
        try:
            self.run()
        finally:
            thread_ends(thread, shared)
            thread._restore_run(self, self.own_run)
